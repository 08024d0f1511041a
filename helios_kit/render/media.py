"""What media a page showed over its timeline: the ``<audio>``/``<video>`` elements and the attributes the
audio mix reads, as the page's shim reports them (``window.__heliosInternal.describeMedia()``).

A render's own page reports them after its last frame (it stepped every frame from 0), and so does a probe
that only steps the page (:func:`helios_kit.render.probe.scan_media`); the audio mix turns them into tracks
(:func:`helios_kit.render.audio.tracks_from_scan`).
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

if TYPE_CHECKING:
    from helios_kit.render.browser import Page
    from helios_kit.render.server import CompositionServer


class MediaElement(BaseModel):
    """One ``<audio>``/``<video>`` the page showed, with the attributes the audio mix reads."""

    tag: str
    src: str = ""
    born_s: float = 0.0
    #: True when the element plays on the composition's timeline (t - offset) rather than from when it appeared.
    composition: bool = False
    #: True when the page drives a @helios-project/core instance (the original mixes every media element).
    helios: bool = False
    offset: float = 0.0
    seek: float = 0.0
    rate: float = 1.0
    loop: bool = False
    fade_in: float = 0.0
    fade_out: float = 0.0
    fade_easing: str | None = None
    track_id: str | None = None
    no_audio: bool = False
    audio: str | None = None
    start: str | None = None
    volume_attr: str | None = None
    trim_start: str | None = None
    trim_end: str | None = None
    muted: bool = False
    volume: float = 1.0
    duration: float | None = None


class MediaScan(BaseModel):
    """The media a page showed over its timeline, and the local folder its URLs map to."""

    elements: list[MediaElement]
    frames_stepped: int
    #: (base URL, folder) of the composition server when the composition is local: map srcs back to files.
    served_root: tuple[str, str] | None = None

    def local_path(self, src: str) -> str:
        """A served URL as the local file it came from; other URLs unchanged."""
        if self.served_root and src.startswith(self.served_root[0]):
            relative = unquote(urlparse(src).path).lstrip("/")
            return str(pathlib.Path(self.served_root[1], relative))
        return src


def describe_media(page: Page, server: CompositionServer | None, frames_stepped: int, timeout_s: float) -> MediaScan:
    """The media `page` has shown since frame 0, having been stepped through `frames_stepped` frames."""
    found = page.evaluate("window.__heliosInternal.describeMedia()", timeout=timeout_s) or []
    root = (server.base_url, str(server.root)) if server is not None else None
    elements = [MediaElement.model_validate(_snake(item)) for item in found]
    return MediaScan(elements=elements, frames_stepped=frames_stepped, served_root=root)


def _snake(item: dict[str, Any]) -> dict[str, Any]:
    names = {
        "bornS": "born_s",
        "fadeIn": "fade_in",
        "fadeOut": "fade_out",
        "fadeEasing": "fade_easing",
        "trackId": "track_id",
        "noAudio": "no_audio",
        "volumeAttr": "volume_attr",
        "trimStart": "trim_start",
        "trimEnd": "trim_end",
    }
    return {names.get(key, key): value for key, value in item.items()}
