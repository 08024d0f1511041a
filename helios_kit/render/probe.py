"""Look into a composition in the browser without capturing it: what its Helios instance declares (size,
fps, duration) and which media elements its scripts show over its timeline (for the audio mix).

Both load the page exactly as a render does (same server, same virtual-time shim, same props), so what they
report is what a render sees. They start a browser of their own; callers use them only when the static HTML
does not tell (no flag, no ``<meta name="helios">``) or when the merge needs the soundtrack.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, Field

from helios_kit.composition.media import MediaScan
from helios_kit.errors import BrowserFault, RenderError
from helios_kit.render import clock
from helios_kit.render.browser import Browser, CDPError, Page, find_browser
from helios_kit.render.capture import FrameError
from helios_kit.render.media import describe_media
from helios_kit.render.page import RenderCancelled
from helios_kit.render.server import CompositionServer
from helios_kit.render.session import DEFAULT_TIMEOUT_S, fast_forward, open_page, resolve_input

#: Longest timeline the media discovery steps through (frames): an hour at 30 fps.
MAX_DISCOVERY_FRAMES = 108_000


class PageSettings(BaseModel):
    """What a page's Helios instance declares; None where it says nothing usable."""

    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fps: float | None = Field(None, gt=0)
    duration: float | None = Field(None, gt=0)


class _ProbeConfig(BaseModel):
    """The settings open_page reads (a RenderConfig's subset): a probe renders nothing."""

    width: int = 1280
    height: int = 720
    fps: float = 30.0
    props: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


@contextlib.contextmanager
def loaded_page(
    input_location: str,
    *,
    fps: float = 30.0,
    props: Mapping[str, Any] | None = None,
    seed: int = 0,
    timeout_s: float,
) -> Iterator[tuple[Page, CompositionServer | None]]:
    """The composition loaded at virtual time 0 in a fresh browser (closed on exit)."""
    url, html_file = resolve_input(input_location)
    config = _ProbeConfig(fps=fps, props=dict(props or {}), seed=seed)
    with contextlib.ExitStack() as stack:
        server = None
        if html_file is not None:
            server = stack.enter_context(CompositionServer(html_file.parent))
            url = server.url_for(html_file)
        assert url is not None
        browser = stack.enter_context(Browser(find_browser(), begin_frame_control=False))
        try:
            page = open_page(browser, url, config, timeout_s, None)  # type: ignore[arg-type]
            yield page, server
        except (CDPError, TimeoutError) as error:
            first_line = (str(error) or type(error).__name__).splitlines()[0]
            raise BrowserFault(f"cannot inspect {input_location}: {first_line}") from None


def page_settings(
    input_location: str, *, props: Mapping[str, Any] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> PageSettings | None:
    """The width, height, fps and duration the page's @helios-project/core instance declares, or None when
    the page exposes no such instance as ``window.helios``."""
    with loaded_page(input_location, props=props, timeout_s=timeout_s) as (page, _server):
        found = page.evaluate(clock.SETTINGS_EXPRESSION, timeout=timeout_s)
    if not isinstance(found, dict):
        return None
    width, height = found.get("width"), found.get("height")
    return PageSettings(
        width=round(width) if width else None,
        height=round(height) if height else None,
        fps=found.get("fps") or None,
        duration=found.get("duration") or None,
    )


def scan_media(
    input_location: str,
    *,
    fps: float | None = None,
    frame_count: int | None = None,
    props: Mapping[str, Any] | None = None,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> MediaScan:
    """Every media element the page shows while it is stepped over frames [0, frame_count) as a render steps
    them (fast-forward, no capture). Without `frame_count`, the length the page declares (its Helios
    instance, else its meta tag); without either, frame 0 only. A set `cancel` stops it between batches of
    frames (RenderCancelled)."""
    render_fps = fps or 30.0
    with loaded_page(input_location, fps=render_fps, props=props, seed=seed, timeout_s=timeout_s) as (page, server):
        if frame_count is None:
            declared = page.evaluate("window.__heliosInternal.declaredLength()", timeout=timeout_s) or {}
            duration = declared.get("duration")
            frame_count = math.ceil(duration * render_fps - 1e-9) if duration else 1
        stop = max(1, min(int(frame_count), MAX_DISCOVERY_FRAMES))
        try:
            fast_forward(page, 0, stop, timeout_s, cancel)
        except FrameError as error:
            message = f"audio discovery: composition failed at frame {error.frame}: {error.message}"
            raise RenderError(message) from None
        except RenderCancelled:
            raise RenderCancelled("audio discovery: cancelled") from None
        return describe_media(page, server, stop, timeout_s)
