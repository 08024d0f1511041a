"""The render's side of :mod:`helios_kit.composition.media`: ask a page which media it has shown
(``window.__heliosInternal.describeMedia()``), naming each one served from the composition's folder by its
path there. A render's own page is asked after its last frame (it stepped every frame from 0), and so is a
probe that only steps the page (:func:`helios_kit.render.probe.scan_media`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from helios_kit.composition.media import MediaElement, MediaScan

if TYPE_CHECKING:
    from helios_kit.render.browser import Page
    from helios_kit.render.server import CompositionServer


def describe_media(page: Page, server: CompositionServer | None, frames_stepped: int, timeout_s: float) -> MediaScan:
    """The media `page` has shown since frame 0, having been stepped through `frames_stepped` frames."""
    found = page.evaluate("window.__heliosInternal.describeMedia()", timeout=timeout_s) or []
    elements = [MediaElement.model_validate(item) for item in found]
    if server is None:
        return MediaScan(elements=elements, frames_stepped=frames_stepped)
    served = [_with_path(element, server.base_url) for element in elements]
    return MediaScan(elements=served, frames_stepped=frames_stepped, root=str(server.root))


def _with_path(element: MediaElement, base_url: str) -> MediaElement:
    if not element.src.startswith(base_url):
        return element
    return element.model_copy(update={"path": unquote(urlparse(element.src).path).lstrip("/")})
