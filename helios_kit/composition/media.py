"""The media elements a composition's page showed over its timeline (``<audio>``/``<video>``, with the
attributes the audio mix reads): the render's page reports them after its last frame
(:func:`helios_kit.render.media.describe_media`), a chunk's manifest carries them, and the audio mix turns them
into tracks (:func:`helios_kit.render.audio.tracks_from_scan`). So a whole render, or a job's merge, mixes the
soundtrack from what the last frames' page saw, without stepping the page again in a browser of its own.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from helios_kit.protocol import WireModel


class MediaElement(WireModel):
    """One ``<audio>``/``<video>`` the page showed, with the attributes the audio mix reads (camelCase on
    the wire, as the page reports them)."""

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
    #: Where `src` is in the composition's folder (POSIX, relative) when the composition server served it:
    #: the file wherever the composition is (a worker's copy, the merge's), the server's URL being gone.
    path: str | None = None


class MediaScan(BaseModel):
    """The media a page showed over its first `frames_stepped` frames, and the composition's folder here
    (where the elements' `path`s are; None for a composition loaded from a URL)."""

    elements: list[MediaElement]
    frames_stepped: int
    root: str | None = None

    def source(self, element: MediaElement) -> str | None:
        """Where to read `element`'s media: its file in the composition's folder when it came from there
        (None when that folder is not known here or the path leads out of it), else its URL."""
        if element.path is None:
            return element.src
        if self.root is None:
            return None
        root = Path(self.root).resolve()
        file = root.joinpath(*PurePosixPath(element.path).parts).resolve()
        return str(file) if file.is_relative_to(root) else None
