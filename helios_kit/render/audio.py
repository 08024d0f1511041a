"""A composition's soundtrack: found statically in its HTML, mixed once over the whole timeline at the merge.

Chunks are rendered silent. Audio is mixed once, when the chunks are joined (see :mod:`helios_kit.stitch`),
so a chunk border can never click, drift or restart a track.

The convention (attributes on ordinary media elements, read from the HTML without running it):

``<audio src="music.ogg" data-helios-start="1.5" data-helios-volume="0.5" loop>``
    Every ``<audio>`` element is a track, unless it has ``data-helios-audio="off"``. Its source is the
    ``src`` attribute, or the first ``<source src>`` child; it resolves relative to the composition's HTML
    file (or URL).

``<video src="clip.webm" data-helios-audio>``
    A ``<video>``'s soundtrack is mixed only when the element opts in with ``data-helios-audio``
    (any value but ``off``/``false``/``0``).

Attributes (all optional; times in seconds of the composition's timeline, where frame n is at n / fps):

- ``data-helios-start``: when the track starts playing (default 0).
- ``data-helios-volume``: gain, 0 to 10, 1 = unchanged (default 1). On an ``<audio>``, the ``muted``
  attribute means 0 and drops the track; on an opted-in ``<video>`` it is ignored (browsers need it to
  autoplay).
- ``data-helios-trim-start`` / ``data-helios-trim-end``: play only that part of the source file.
- ``loop`` (the standard attribute): repeat the (trimmed) source until the end of the video.

The mix is cut or padded with silence to exactly the video's duration. Elements added by scripts at run
time are not seen; declare them in the HTML.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

from helios_kit.errors import LoaderError, RenderError

_OFF_VALUES = frozenset({"off", "false", "0", "no"})


class AudioTrack(BaseModel):
    """One source placed on the timeline: starts at ``start_s``, scaled by ``volume``, optionally trimmed/looped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    src: str = Field(min_length=1, description="Local file path or http(s) URL of the audio (or video) file.")
    start_s: float = Field(0.0, ge=0, description="Timeline time at which the track starts.")
    volume: float = Field(1.0, ge=0, le=10)
    trim_start_s: float = Field(0.0, ge=0, description="Skip this much of the source's beginning.")
    trim_end_s: float | None = Field(None, gt=0, description="Stop at this time of the source.")
    loop: bool = False

    @model_validator(mode="after")
    def _trim_order(self) -> AudioTrack:
        if self.trim_end_s is not None and self.trim_end_s <= self.trim_start_s:
            raise ValueError(
                f"trim_end_s {self.trim_end_s} must be after trim_start_s {self.trim_start_s} for {self.src}"
            )
        return self


class AudioPlan(BaseModel):
    """The tracks to mix over the merged video, and how to encode the mix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracks: list[AudioTrack] = Field(default_factory=list)
    timeline_start_s: float = Field(
        0.0, ge=0, description="Timeline time of the output's first frame (start_frame / fps)."
    )
    codec: str = "aac"
    bitrate: str = "192k"
    sample_rate: int = Field(48000, gt=0)


def _seconds(value: str | None, attr: str, where: str, default: float | None) -> float | None:
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        raise RenderError(f"{where}: {attr}={value!r} is not a number of seconds") from None
    if number < 0 or number != number or number in (float("inf"), float("-inf")):
        raise RenderError(f"{where}: {attr}={value!r} must be a finite number >= 0")
    return number


class _MediaCollector(HTMLParser):
    """Collects <audio>/<video> elements with their attributes and first <source src> child."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None], int]] = []
        self._open: list[int] = []  # indexes in self.elements of media elements not yet closed

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("audio", "video"):
            self.elements.append((tag, dict(attrs), self.getpos()[0]))
            self._open.append(len(self.elements) - 1)
        elif tag == "source" and self._open:
            _, element_attrs, _ = self.elements[self._open[-1]]
            src = dict(attrs).get("src")
            if src and not element_attrs.get("src"):
                element_attrs["src"] = src

    def handle_endtag(self, tag: str) -> None:
        if tag in ("audio", "video") and self._open:
            self._open.pop()


def _read_html(input_location: str) -> tuple[str, str]:
    """Return (html text, base for resolving relative srcs: a directory path or a URL)."""
    scheme = urlparse(input_location).scheme
    if scheme in ("http", "https"):
        import httpx

        try:
            response = httpx.get(input_location, timeout=30, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise LoaderError(f"{input_location}: cannot fetch composition for audio: {exc}") from None
        if response.status_code >= 400:
            raise LoaderError(f"{input_location}: HTTP {response.status_code} while reading its audio")
        return response.text, str(response.url)
    path = Path(unquote(urlparse(input_location).path) if scheme == "file" else input_location)
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        raise LoaderError(f"{path}: no such composition file")
    return path.read_text(encoding="utf-8", errors="replace"), str(path.resolve())


def _resolve(src: str, base: str) -> str:
    if urlparse(base).scheme in ("http", "https"):
        return urljoin(base, src)
    parsed = urlparse(src)
    if parsed.scheme in ("http", "https"):
        return src
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme:  # data:, blob:, ... cannot be mixed statically
        raise RenderError(f"audio src {src[:60]!r}: unsupported scheme {parsed.scheme!r}")
    return str((Path(base).parent / unquote(parsed.path)).resolve())


def discover_audio(input_location: str) -> AudioPlan:
    """Read the composition's HTML (file, folder with index.html, or http(s) URL) and list its audio tracks."""
    html, base = _read_html(input_location)
    collector = _MediaCollector()
    collector.feed(html)
    collector.close()
    tracks: list[AudioTrack] = []
    for tag, attrs, line in collector.elements:
        if tag == "video" and "data-helios-audio" not in attrs:
            continue
        if (attrs.get("data-helios-audio") or "").strip().lower() in _OFF_VALUES:
            continue
        where = f"{Path(base).name if '://' not in base else base}:{line} <{tag}>"
        src = attrs.get("src")
        if not src:
            raise RenderError(f"{where}: has no src (nor a <source src> child) to take its audio from")
        volume = _seconds(attrs.get("data-helios-volume"), "data-helios-volume", where, 1.0)
        # A muted <audio> stays silent; a <video> is usually muted only so browsers autoplay it, and its
        # data-helios-audio opt-in is explicit, so `muted` does not silence it.
        if tag == "audio" and "muted" in attrs and attrs.get("data-helios-volume") is None:
            volume = 0.0
        if not volume:
            continue
        if volume > 10:
            raise RenderError(f"{where}: data-helios-volume={volume} must be at most 10")
        trim_start = _seconds(attrs.get("data-helios-trim-start"), "data-helios-trim-start", where, 0.0)
        trim_end = _seconds(attrs.get("data-helios-trim-end"), "data-helios-trim-end", where, None)
        if trim_end is not None and trim_end <= (trim_start or 0.0):
            raise RenderError(f"{where}: data-helios-trim-end={trim_end} must be after trim-start")
        tracks.append(
            AudioTrack(
                src=_resolve(src, base),
                start_s=_seconds(attrs.get("data-helios-start"), "data-helios-start", where, 0.0) or 0.0,
                volume=volume,
                trim_start_s=trim_start or 0.0,
                trim_end_s=trim_end,
                loop="loop" in attrs,
            )
        )
    return AudioPlan(tracks=tracks)


def _fmt(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") or "0"


def mix_filter(plan: AudioPlan, duration_s: float, first_input: int = 1) -> tuple[list[list[str]], str]:
    """Build the ffmpeg inputs and filter graph that mix ``plan`` into one stream labelled ``[aout]``.

    Returns (per-track input argument lists, in order, to append to the ffmpeg command, starting at input
    index ``first_input``; the ``-filter_complex`` graph). The mix lasts exactly ``duration_s``.
    """
    inputs: list[list[str]] = []
    chains: list[str] = []
    labels: list[str] = []
    rate = plan.sample_rate
    fmt = f"aformat=sample_fmts=fltp:sample_rates={rate}:channel_layouts=stereo"
    for i, track in enumerate(plan.tracks):
        index = first_input + i
        inputs.append(["-i", track.src])
        delay = track.start_s - plan.timeline_start_s  # < 0: the track began before the output's t=0
        steps = [fmt]
        if track.trim_start_s or track.trim_end_s is not None:
            trim = f"atrim=start={_fmt(track.trim_start_s)}"
            if track.trim_end_s is not None:
                trim += f":end={_fmt(track.trim_end_s)}"
            steps += [trim, "asetpts=PTS-STARTPTS"]
        if track.loop:
            steps.append("aloop=loop=-1:size=2147483647")
        if delay < 0:
            steps += [f"atrim=start={_fmt(-delay)}", "asetpts=PTS-STARTPTS"]
        if track.volume != 1:
            steps.append(f"volume={track.volume:g}")
        if delay > 0:
            steps.append(f"adelay=delays={round(delay * 1000)}:all=1")
        # Cut every track to the video's length so a looping one ends and the mix can finish.
        steps.append(f"atrim=end={_fmt(duration_s)}")
        chains.append(f"[{index}:a]{','.join(steps)}[a{i}]")
        labels.append(f"[a{i}]")
    tail = f"apad,atrim=end={_fmt(duration_s)},asetpts=PTS-STARTPTS"
    if not labels:
        raise RenderError("audio plan has no tracks to mix")
    mix = f"{''.join(labels)}amix=inputs={len(labels)}:duration=longest:normalize=0,{tail}[aout]"
    return inputs, ";".join([*chains, mix])
