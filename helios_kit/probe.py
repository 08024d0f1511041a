"""Media facts of a video file: an ffprobe wrapper, plus a fast MP4 header reader for many files.

:func:`probe` runs ffprobe once (with ``-count_packets``, which counts without decoding) and returns a
:class:`MediaInfo`: codec, size, frame rate, pixel format, time base, frame count and duration of the
first video stream, and the first audio stream's codec and duration if there is one.

ffprobe costs ~50 ms a file on this machine, too slow for checking a thousand chunks. For that,
:func:`mp4_video_signature` reads only the ``moov`` box of an MP4 (a few KB at the start of a
``+faststart`` file) and returns a :class:`Mp4VideoSignature`: the sample description (codec, size,
SPS/PPS, colour) with its per-file bitrate box removed, the time scale, the frame durations and the
sample (frame) count. Two files whose signatures are compatible can be joined by stream copy; anything it
cannot read returns ``None`` and the caller falls back to :func:`probe`.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict

from helios_kit.errors import RenderError

#: Child boxes of a sample entry that legitimately differ between files encoded with identical settings.
_PER_FILE_SAMPLE_ENTRY_BOXES = frozenset({b"btrt"})
#: Size of the fixed part of a VisualSampleEntry after its 8-byte box header (ISO/IEC 14496-12).
_VISUAL_SAMPLE_ENTRY_FIXED = 78


class MediaInfo(BaseModel):
    """What ffprobe says about a file's first video stream (and first audio stream, if any)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    format_name: str
    codec: str
    profile: str | None = None
    width: int
    height: int
    pixel_format: str
    frame_rate: str  # exact, as ffprobe's r_frame_rate, e.g. "30/1" or "30000/1001"
    time_base: str  # e.g. "1/15360"
    frame_count: int
    duration_s: float
    audio_codec: str | None = None
    audio_duration_s: float | None = None
    audio_sample_rate: int | None = None

    @property
    def fps(self) -> float:
        return float(Fraction(self.frame_rate))

    def compatibility_fields(self) -> dict[str, object]:
        """The fields that must agree for two files to be joined by stream copy, in report order."""
        return {
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": self.frame_rate,
            "pixel format": self.pixel_format,
            "time base": self.time_base,
            "profile": self.profile,
        }


def ffprobe_binary() -> str:
    """The ffprobe executable, or a RenderError saying how to get one."""
    found = shutil.which("ffprobe")
    if not found:
        raise RenderError("ffprobe not found on PATH: install ffmpeg (e.g. `apt-get install ffmpeg`)")
    return found


def _run_ffprobe(path: Path, args: list[str]) -> dict:
    cmd = [ffprobe_binary(), "-v", "error", *args, "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise RenderError(f"{path}: ffprobe cannot read it: {detail}")
    return json.loads(proc.stdout or "{}")


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def probe(path: str | Path) -> MediaInfo:
    """Probe ``path`` with one ffprobe call; RenderError if it is missing or has no video stream."""
    path = Path(path)
    if not path.is_file():
        raise RenderError(f"{path}: no such file")
    data = _run_ffprobe(path, ["-count_packets", "-show_streams", "-show_format"])
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise RenderError(f"{path}: has no video stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = data.get("format", {})
    frames = int(video.get("nb_read_packets") or video.get("nb_frames") or 0)
    rate = video.get("r_frame_rate") or video.get("avg_frame_rate") or "0/1"
    duration = _float(video.get("duration")) or _float(fmt.get("duration")) or 0.0
    return MediaInfo(
        path=path,
        format_name=fmt.get("format_name", ""),
        codec=video.get("codec_name", ""),
        profile=video.get("profile"),
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        pixel_format=video.get("pix_fmt", ""),
        frame_rate=str(Fraction(rate)) if rate != "0/0" else "0",
        time_base=video.get("time_base", ""),
        frame_count=frames,
        duration_s=duration,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_duration_s=_float(audio.get("duration")) if audio else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
    )


def count_packets(path: str | Path, stream: str = "v:0") -> int:
    """Number of packets (= frames, for video) in one stream, counted by ffprobe without decoding."""
    path = Path(path)
    data = _run_ffprobe(path, ["-select_streams", stream, "-count_packets", "-show_entries", "stream=nb_read_packets"])
    streams = data.get("streams", [])
    if not streams:
        raise RenderError(f"{path}: has no stream {stream}")
    return int(streams[0].get("nb_read_packets") or 0)


class Mp4VideoSignature(BaseModel):
    """The parts of an MP4's video track header that decide whether files can be concatenated by copy."""

    model_config = ConfigDict(frozen=True)

    sample_entry: bytes  # the stsd entry (codec fourcc, size, avcC/hvcC...), minus per-file boxes
    timescale: int
    frame_durations: tuple[int, ...]  # distinct sample deltas from stts, in order of appearance
    sample_count: int

    def compatible_with(self, other: Mp4VideoSignature) -> bool:
        """Same codec configuration, time scale and one constant frame duration in both."""
        return (
            self.sample_entry == other.sample_entry
            and self.timescale == other.timescale
            and len(self.frame_durations) == 1
            and self.frame_durations == other.frame_durations
        )


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, payload_start, payload_end) for the boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def _read_moov(f: BinaryIO, file_size: int) -> bytes | None:
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        header = f.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack_from(">I4s", header)
        header_len = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", header, 8)
            header_len = 16
        elif size == 0:
            size = file_size - pos
        if size < header_len:
            return None
        if kind == b"moov":
            f.seek(pos + header_len)
            return f.read(size - header_len)
        pos += size
    return None


def _video_signature_from_moov(moov: bytes) -> Mp4VideoSignature | None:
    for kind, t_start, t_end in _boxes(moov):
        if kind != b"trak":
            continue
        mdia = _child(moov, t_start, t_end, b"mdia")
        if mdia is None:
            continue
        hdlr = _child(moov, *mdia, b"hdlr")
        if hdlr is None or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        mdhd = _child(moov, *mdia, b"mdhd")
        minf = _child(moov, *mdia, b"minf")
        stbl = _child(moov, *minf, b"stbl") if minf else None
        if mdhd is None or stbl is None:
            return None
        version = moov[mdhd[0]]
        timescale_at = mdhd[0] + (20 if version == 1 else 12)
        (timescale,) = struct.unpack_from(">I", moov, timescale_at)
        stsd, stts, stsz = (_child(moov, *stbl, k) for k in (b"stsd", b"stts", b"stsz"))
        if stsd is None or stts is None or stsz is None:
            return None
        (entry_count,) = struct.unpack_from(">I", moov, stsd[0] + 4)
        entries = list(_boxes(moov, stsd[0] + 8, stsd[1]))
        if entry_count != 1 or len(entries) != 1:
            return None
        fourcc, e_start, e_end = entries[0]
        fixed_end = e_start + _VISUAL_SAMPLE_ENTRY_FIXED
        kept = [fourcc, moov[e_start:fixed_end]]
        for child_kind, c_start, c_end in _boxes(moov, fixed_end, e_end):
            if child_kind not in _PER_FILE_SAMPLE_ENTRY_BOXES:
                kept.append(child_kind + moov[c_start:c_end])
        (stts_count,) = struct.unpack_from(">I", moov, stts[0] + 4)
        durations: list[int] = []
        for i in range(stts_count):
            _, delta = struct.unpack_from(">II", moov, stts[0] + 8 + 8 * i)
            if delta not in durations:
                durations.append(delta)
        (sample_count,) = struct.unpack_from(">I", moov, stsz[0] + 8)
        return Mp4VideoSignature(
            sample_entry=b"".join(kept),
            timescale=timescale,
            frame_durations=tuple(durations),
            sample_count=sample_count,
        )
    return None


def mp4_video_signature(path: str | Path) -> Mp4VideoSignature | None:
    """Read the video track signature from an MP4/MOV header, or None if it is not a plain MP4 we can read.

    Fragmented MP4s (frames counted in ``moof`` boxes) and anything malformed give None.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            moov = _read_moov(f, path.stat().st_size)
        if not moov or _child(moov, 0, len(moov), b"mvex") is not None:
            return None
        return _video_signature_from_moov(moov)
    except (OSError, struct.error, ValueError):
        return None
