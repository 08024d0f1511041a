"""A composition's soundtrack: the media its page shows over its timeline, mixed once at the merge.

Chunks are rendered silent. Audio is mixed once, when the chunks are joined (see :mod:`helios_kit.stitch`),
so a chunk border can never click, drift or restart a track.

Where the tracks come from: a page without scripts, iframes or declarative shadow roots is read as static
HTML; any other page is loaded in the browser and stepped over its timeline as a render steps it
(:func:`helios_kit.render.probe.scan_media`), so media created or given a ``src`` by scripts, inside
shadow roots and same-origin iframes are found too (without a browser, the static HTML is read and a
warning says so). A media element without a source is left out with a warning.

The convention (attributes on ordinary media elements):

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

The original Helios renderer's attributes are read as it reads them (and as @helios-project/core's
DomDriver does):

- ``data-helios-offset`` (seconds): where the media starts on the timeline (as ``data-helios-start``).
- ``data-helios-seek`` (seconds): the media's own time at its start (its playhead is at
  ``max(0, (t - offset) x rate + seek)``, modulo its duration when ``loop``).
- ``playbackRate`` (the property, else the attribute): the speed the source plays at (``atempo``).
- ``data-helios-fade-in`` / ``data-helios-fade-out`` (seconds): gain ramps at the track's start and at its
  end (the end of the source when it ends before the video, else the video's end), shaped by
  ``data-helios-fade-easing`` (the core's easing names: ``linear``, ``quad.in``, ``cubic.out``, ``sine.inOut``
  ...; mapped to the closest ffmpeg ``afade`` curve).
- ``data-helios-no-audio``: never mixed. ``data-helios-track-id`` is kept on the track.
- ``muted`` (attribute or property) / ``volume`` (property): the gain, unless ``data-helios-volume`` gives it.
- On a page that drives a @helios-project/core instance (``window.helios``), every ``<video>`` is mixed
  too, as in the original renderer; elsewhere a ``<video>`` opts in with ``data-helios-audio``.
- A media element created by script without offset attributes starts when it appeared.

The mix is cut or padded with silence to exactly the video's duration.
"""

from __future__ import annotations

import logging
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

from helios_kit.errors import LoaderError, RenderError

if TYPE_CHECKING:
    import threading

    from helios_kit.composition.media import MediaElement, MediaScan

#: The mix's peak ceiling: -1 dBFS.
LIMIT = 0.891

_OFF_VALUES = frozenset({"off", "false", "0", "no"})
log = logging.getLogger("helios.audio")


class AudioTrack(BaseModel):
    """One source placed on the timeline: starts at ``start_s``, scaled by ``volume``, optionally trimmed/looped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    src: str = Field(min_length=1, description="Local file path or http(s) URL of the audio (or video) file.")
    start_s: float = Field(0.0, ge=0, description="Timeline time at which the track starts.")
    volume: float = Field(1.0, ge=0, le=10)
    trim_start_s: float = Field(0.0, ge=0, description="Skip this much of the source's beginning.")
    trim_end_s: float | None = Field(None, gt=0, description="Stop at this time of the source.")
    loop: bool = False
    seek_s: float = Field(0.0, ge=0, description="The source's own time at the track's start (after looping).")
    playback_rate: float = Field(1.0, gt=0, le=100, description="Speed the source plays at.")
    fade_in_s: float = Field(0.0, ge=0, description="Gain ramp from silence at the track's start.")
    fade_out_s: float = Field(0.0, ge=0, description="Gain ramp to silence at the track's end.")
    fade_easing: str | None = Field(None, description="@helios-project/core easing name of the fades.")
    track_id: str | None = None
    source_duration_s: float | None = Field(None, gt=0, description="Length of the source, when known.")

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


def _needs_browser(html: str) -> bool:
    """True when media may exist that the static HTML does not show (scripts, iframes, declarative shadow DOM)."""
    return re.search(r"<script|<iframe|shadowrootmode", html, re.IGNORECASE) is not None


def discover_audio(
    input_location: str,
    *,
    fps: float | None = None,
    frame_count: int | None = None,
    props: dict | None = None,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> AudioPlan:
    """The audio tracks of a composition (file, folder with index.html, or http(s) URL).

    A page with scripts, iframes or declarative shadow roots is loaded in the browser and stepped over
    frames [0, frame_count) at `fps` (default: the length its Helios instance or meta tag declares) to find
    the media it shows (a set `cancel` stops the stepping); any other page is read as static HTML."""
    html, base = _read_html(input_location)
    if _needs_browser(html):
        from helios_kit.render.browser import find_browser

        try:
            find_browser()
        except RenderError as error:
            log.warning("audio: %s; reading the static HTML only (media created by scripts are not mixed)", error)
        else:
            from helios_kit.render.probe import scan_media

            scan = scan_media(input_location, fps=fps, frame_count=frame_count, props=props, seed=seed, cancel=cancel)
            return AudioPlan(tracks=tracks_from_scan(scan))
    return AudioPlan(tracks=static_tracks(html, base))


def soundtrack_of_render(
    input_location: str,
    scan: MediaScan | None,
    *,
    fps: float,
    frame_count: int,
    props: dict | None = None,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> AudioPlan:
    """The tracks of a render of frames [0, `frame_count`) whose own page reported `scan` (the media it
    showed; see :mod:`helios_kit.render.media`): a page with scripts takes them from the scan, static HTML is
    read as :func:`discover_audio` reads it, and without a scan the page is stepped again (discover_audio)."""
    html, base = _read_html(input_location)
    if not _needs_browser(html):
        return AudioPlan(tracks=static_tracks(html, base))
    if scan is not None:
        return AudioPlan(tracks=tracks_from_scan(scan))
    return discover_audio(input_location, fps=fps, frame_count=frame_count, props=props, seed=seed, cancel=cancel)


def static_tracks(html: str, base: str) -> list[AudioTrack]:
    """The tracks the HTML declares, read without running it (`base`: its file path or URL)."""
    collector = _MediaCollector()
    collector.feed(html)
    collector.close()
    tracks: list[AudioTrack] = []
    for tag, attrs, line in collector.elements:
        if tag == "video" and "data-helios-audio" not in attrs:
            continue
        if (attrs.get("data-helios-audio") or "").strip().lower() in _OFF_VALUES:
            continue
        if "data-helios-no-audio" in attrs:
            continue
        where = f"{Path(base).name if '://' not in base else base}:{line} <{tag}>"
        src = attrs.get("src")
        if not src:
            log.warning("audio: %s has no src (nor a <source src> child): left out of the mix", where)
            continue
        volume = _seconds(attrs.get("data-helios-volume"), "data-helios-volume", where, None)
        if volume is None:
            # A muted <audio> stays silent; a <video> is usually muted only so browsers autoplay it, and its
            # data-helios-audio opt-in is explicit, so `muted` does not silence it.
            volume = 0.0 if tag == "audio" and "muted" in attrs else 1.0
        track = _track(
            tag,
            where,
            src=_resolve(src, base),
            start=attrs.get("data-helios-start"),
            offset=attrs.get("data-helios-offset"),
            default_start=0.0,
            volume=volume,
            trim_start=attrs.get("data-helios-trim-start"),
            trim_end=attrs.get("data-helios-trim-end"),
            loop="loop" in attrs,
            seek=_number(attrs.get("data-helios-seek")),
            rate=_number(attrs.get("playbackrate"), 1.0),
            fade_in=_number(attrs.get("data-helios-fade-in")),
            fade_out=_number(attrs.get("data-helios-fade-out")),
            fade_easing=attrs.get("data-helios-fade-easing"),
            track_id=attrs.get("data-helios-track-id"),
            duration=None,
        )
        if track is not None:
            tracks.append(track)
    return tracks


def tracks_from_scan(scan: MediaScan) -> list[AudioTrack]:
    """The tracks of the media elements a page showed while it was stepped (see render.probe.scan_media)."""
    tracks: list[AudioTrack] = []
    for element in scan.elements:
        track = _track_from_element(element, scan)
        if track is not None:
            tracks.append(track)
    return tracks


def _track_from_element(el: MediaElement, scan: MediaScan) -> AudioTrack | None:
    where = f"<{el.tag} src={el.src[:80]!r}>" if el.src else f"<{el.tag}> (appeared at {el.born_s:g} s)"
    off = el.audio is not None and el.audio.strip().lower() in _OFF_VALUES
    if el.no_audio or off or (el.tag == "video" and el.audio is None and not el.helios):
        return None
    if not el.src:
        log.warning("audio: %s has no src: left out of the mix", where)
        return None
    if urlparse(el.src).scheme in ("blob", "data"):
        log.warning("audio: %s: a %s: URL cannot be mixed; left out", where, urlparse(el.src).scheme)
        return None
    source = scan.source(el)
    if source is None:
        log.warning("audio: %s: its file %r is not in the composition's folder here; left out", where, el.path)
        return None
    volume = _seconds(el.volume_attr, "data-helios-volume", where, None)
    if volume is None:
        # An opted-in <video> of a plain page is muted only so it may autoplay (see the module docstring);
        # the original renderer mixes every element at `muted ? 0 : volume`.
        opted_in_video = el.tag == "video" and el.audio is not None and not el.helios
        volume = 0.0 if el.muted and not opted_in_video else el.volume
    return _track(
        el.tag,
        where,
        src=source,
        start=el.start,
        offset=str(el.offset) if el.composition else None,
        default_start=0.0 if el.composition else el.born_s,
        volume=volume,
        trim_start=el.trim_start,
        trim_end=el.trim_end,
        loop=el.loop,
        seek=el.seek,
        rate=el.rate,
        fade_in=el.fade_in,
        fade_out=el.fade_out,
        fade_easing=el.fade_easing,
        track_id=el.track_id,
        duration=el.duration,
    )


def _number(value: str | None, default: float = 0.0) -> float:
    """A lenient number, as the original renderer's parseFloat reads its attributes (NaN -> default)."""
    match = re.match(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value or "")
    if not match:
        return default
    number = float(match.group(0))
    return number if math.isfinite(number) else default


def _track(
    tag: str,
    where: str,
    *,
    src: str,
    start: str | None,
    offset: str | None,
    default_start: float,
    volume: float,
    trim_start: str | None,
    trim_end: str | None,
    loop: bool,
    seek: float,
    rate: float,
    fade_in: float,
    fade_out: float,
    fade_easing: str | None,
    track_id: str | None,
    duration: float | None,
) -> AudioTrack | None:
    """One track from an element's attributes; None when silent; RenderError naming the element."""
    if not volume:
        return None
    if volume > 10:
        raise RenderError(f"{where}: data-helios-volume={volume} must be at most 10")
    begin = _seconds(start, "data-helios-start", where, None)
    rate = rate if math.isfinite(rate) and rate > 0 else 1.0
    seek = max(0.0, seek)
    if begin is None:
        begin = _number(offset, default_start) if offset is not None else default_start
        if begin < 0:  # a negative offset: the media was already playing at t = 0
            seek, begin = seek - begin * rate, 0.0
    trim_from = _seconds(trim_start, "data-helios-trim-start", where, 0.0) or 0.0
    trim_to = _seconds(trim_end, "data-helios-trim-end", where, None)
    if trim_to is not None and trim_to <= trim_from:
        raise RenderError(f"{where}: data-helios-trim-end={trim_to} must be after trim-start")
    return AudioTrack(
        src=src,
        start_s=begin,
        volume=volume,
        trim_start_s=trim_from,
        trim_end_s=trim_to,
        loop=loop,
        seek_s=seek,
        playback_rate=min(rate, 100.0),
        fade_in_s=max(0.0, fade_in),
        fade_out_s=max(0.0, fade_out),
        fade_easing=fade_easing or None,
        track_id=track_id or None,
        source_duration_s=duration if duration and math.isfinite(duration) and duration > 0 else None,
    )


def _fmt(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") or "0"


#: @helios-project/core easing families → the closest ffmpeg afade curve.
_FADE_CURVES = {"linear": "tri", "quad": "qua", "cubic": "cub", "sine": "qsin", "expo": "exp", "circ": "cbr"}


def _fade_curve(easing: str | None) -> str:
    family = (easing or "linear").split(".")[0].strip().lower()
    return _FADE_CURVES.get(family, "tri")


def _tempo(rate: float) -> list[str]:
    """atempo steps for a playback rate (each atempo between 0.5 and 2)."""
    if abs(rate - 1) < 1e-9:
        return []
    steps = []
    while rate > 2:
        steps.append("atempo=2")
        rate /= 2
    while rate < 0.5:
        steps.append("atempo=0.5")
        rate /= 0.5
    return [*steps, f"atempo={rate:.6g}"]


def _fades(track: AudioTrack, timeline_end_s: float) -> list[str]:
    """afade steps in the track's own time (0 = its start on the timeline). The fade-out ends where the
    source ends when it ends before the video (not looping, known length), else at the video's end."""
    steps = []
    curve = _fade_curve(track.fade_easing)
    if track.fade_in_s:
        steps.append(f"afade=t=in:st=0:d={_fmt(track.fade_in_s)}:curve={curve}")
    if track.fade_out_s:
        end = timeline_end_s - track.start_s
        if not track.loop and track.source_duration_s is not None:
            playable = (track.trim_end_s or track.source_duration_s) - track.trim_start_s - track.seek_s
            end = min(end, max(0.0, playable) / track.playback_rate)
        start = max(0.0, end - track.fade_out_s)
        steps.append(f"afade=t=out:st={_fmt(start)}:d={_fmt(track.fade_out_s)}:curve={curve}")
    return steps


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
        if track.seek_s:
            steps += [f"atrim=start={_fmt(track.seek_s)}", "asetpts=PTS-STARTPTS"]
        steps += _tempo(track.playback_rate)
        steps += _fades(track, plan.timeline_start_s + duration_s)
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
    # Tracks add up (no normalisation, so a single track keeps its level); a look-ahead limiter, transparent
    # below -1 dBFS and delay-compensated, keeps loud sums from clipping (the AAC encode needs the headroom).
    limiter = f"alimiter=limit={LIMIT:g}:level=disabled:latency=1"
    mix = f"{''.join(labels)}amix=inputs={len(labels)}:duration=longest:normalize=0,{limiter},{tail}[aout]"
    return inputs, ";".join([*chains, mix])
