"""Join chunk files into one video by stream copy (ffmpeg concat demuxer), mixing the audio once.

The chunks of a job are encoded with identical codec parameters and a keyframe at each chunk's first frame,
so joining them needs no re-encode. Before joining, every input is checked: present, not empty, and with
the same codec, size, frame rate, pixel format and time base as the first (the first is probed fully with
ffprobe; the others are checked cheaply from their MP4 headers, falling back to ffprobe for any that
differ or cannot be read, so a thousand chunks take well under a second to check). The result is written
to a temp name beside the output, its frame count is verified to be the sum of the inputs', and only then
is it renamed over the output name: nothing partial ever sits under the output name.

When an :class:`~helios_kit.render.audio.AudioPlan` is given, its tracks are mixed once over the whole
timeline into an AAC track in the same ffmpeg pass (the video is still stream-copied).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel

from helios_kit.errors import RenderError
from helios_kit.probe import (
    MediaInfo,
    Mp4VideoSignature,
    count_packets,
    ffprobe_binary,
    mp4_video_signature,
    probe,
)
from helios_kit.render.audio import AudioPlan, mix_filter


class StitchResult(BaseModel):
    """A finished merge: the output file, its frame count and duration, and the inputs it was made from."""

    output: Path
    frames: int
    duration_s: float
    inputs: list[Path]
    audio_tracks: int = 0


def ffmpeg_binary() -> str:
    """The ffmpeg executable, or a RenderError saying how to get one."""
    found = shutil.which("ffmpeg")
    if not found:
        raise RenderError("ffmpeg not found on PATH: install ffmpeg (e.g. `apt-get install ffmpeg`)")
    return found


def _check_present(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RenderError(f"{path}: input chunk does not exist") from None
    except OSError as exc:
        raise RenderError(f"{path}: cannot read input chunk: {exc.strerror}") from None
    if not path.is_file():
        raise RenderError(f"{path}: input chunk is not a file")
    if size == 0:
        raise RenderError(f"{path}: input chunk is empty (0 bytes)")


def _mismatch(info: MediaInfo, reference: MediaInfo) -> None:
    """Raise a one-line RenderError naming the first field in which ``info`` differs from ``reference``."""
    mine, theirs = info.compatibility_fields(), reference.compatibility_fields()
    for field, value in mine.items():
        if value != theirs[field]:
            raise RenderError(f"{info.path}: {field} {value} differs from {theirs[field]} in {reference.path}")


def _frames_of(path: Path, first: MediaInfo, first_sig: Mp4VideoSignature | None) -> int:
    """Frame count of ``path`` after checking it can be stream-copied after ``first``."""
    sig = mp4_video_signature(path)
    if sig is not None and first_sig is not None and sig.compatible_with(first_sig):
        return sig.sample_count
    info = probe(path)  # the slow path: tell exactly what differs, or accept what only looked different
    _mismatch(info, first)
    if sig is not None and first_sig is not None and sig.sample_entry != first_sig.sample_entry:
        # Same fields, different decoder configuration (SPS/PPS in avcC): a stream copy would decode this
        # chunk with the first one's parameters and corrupt it.
        raise RenderError(
            f"{path}: codec parameters (SPS/PPS: profile, level, reference frames...) differ from {first.path}; "
            "encode every chunk with identical settings"
        )
    return info.frame_count


def check_inputs(inputs: Sequence[Path]) -> tuple[MediaInfo, list[int]]:
    """Check that ``inputs`` can be joined by stream copy; return the first's probe and each one's frames."""
    if not inputs:
        raise RenderError("merge needs at least one input chunk")
    for path in inputs:
        _check_present(path)
    first = probe(inputs[0])
    if first.frame_count <= 0:
        raise RenderError(f"{inputs[0]}: has no video frames")
    first_sig = mp4_video_signature(inputs[0])
    rest = list(inputs[1:])
    if len(rest) > 64:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            counts = list(pool.map(lambda p: _frames_of(p, first, first_sig), rest))
    else:
        counts = [_frames_of(p, first, first_sig) for p in rest]
    for path, count in zip(rest, counts, strict=True):
        if count <= 0:
            raise RenderError(f"{path}: has no video frames")
    return first, [first.frame_count, *counts]


def _concat_line(path: Path) -> str:
    if "\n" in str(path) or "\r" in str(path):
        raise RenderError(f"{path!r}: a chunk path must not contain a line break")
    escaped = str(path.resolve()).replace("'", "'\\''")
    return f"file '{escaped}'\n"


def _check_tracks(plan: AudioPlan) -> None:
    for track in plan.tracks:
        if urlparse(track.src).scheme in ("http", "https"):
            continue
        path = Path(track.src)
        if not path.is_file():
            raise RenderError(f"audio track {track.src}: no such file")
        info = subprocess.run(
            [
                ffprobe_binary(),
                "-v",
                "error",
                "-select_streams",
                "a",
                "-show_entries",
                "stream=index",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if info.returncode != 0 or not info.stdout.strip():
            raise RenderError(f"audio track {track.src}: has no audio stream ffmpeg can read")


def stitch(
    inputs: list[Path],
    output: Path,
    *,
    audio: AudioPlan | None = None,
    expected_frames: int | None = None,
) -> StitchResult:
    """Join ``inputs`` in order into ``output`` by stream copy, mixing ``audio`` once if given.

    Raises RenderError (one line, naming the file and field) for a missing, empty or incompatible input,
    a frame count other than ``expected_frames`` (when given), or an ffmpeg failure. ``output`` is only
    ever replaced by a complete, verified file, so ``output`` may be one of the inputs (e.g. adding the
    soundtrack to a whole render in place).
    """
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    first, counts = check_inputs(inputs)
    total = sum(counts)
    if expected_frames is not None and total != expected_frames:
        raise RenderError(f"merge: inputs hold {total} frames, expected {expected_frames}")
    out_dir = _writable_output_dir(output)
    fps = Fraction(first.frame_rate)
    duration_s = float(total / fps) if fps else 0.0
    mixing = audio is not None and bool(audio.tracks)
    if mixing:
        _check_tracks(audio)

    # A fresh name that ffmpeg creates, so the output gets the mode any new file gets (umask), not mkstemp's 0600.
    tmp = out_dir / f".{output.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.part{output.suffix or '.mp4'}"
    list_fd, list_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".concat.txt", dir=out_dir)
    try:
        with os.fdopen(list_fd, "w", encoding="utf-8") as f:
            f.write(_concat_list(inputs, counts, fps))
        cmd = _concat_command(list_name, tmp, output.suffix, audio if mixing else None, duration_s)
        _run_ffmpeg_concat(cmd, output, tmp, total)
        os.replace(tmp, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(list_name)
    return StitchResult(
        output=output,
        frames=total,
        duration_s=duration_s,
        inputs=inputs,
        audio_tracks=len(audio.tracks) if mixing else 0,
    )


def _writable_output_dir(output: Path) -> Path:
    out_dir = output.parent if str(output.parent) else Path(".")
    if not out_dir.is_dir():
        raise RenderError(f"{output}: output directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise RenderError(f"{output}: output directory {out_dir} is not writable")
    return out_dir


def _concat_list(inputs: list[Path], counts: list[int], fps: Fraction) -> str:
    """The concat demuxer's script: each input with its exact duration. Without the durations the demuxer
    infers them from B-frame-delayed timestamps and frames drift by up to a millisecond per chunk."""
    lines = ["ffconcat version 1.0\n"]
    for path, count in zip(inputs, counts, strict=True):
        lines.append(_concat_line(path))
        if fps:
            lines.append(f"duration {float(count / fps):.9f}\n")
    return "".join(lines)


def _concat_command(list_name: str, tmp: Path, suffix: str, audio: AudioPlan | None, duration_s: float) -> list[str]:
    """ffmpeg's argv: video by stream copy from the concat script, plus the audio mix when there is one."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += ["-f", "concat", "-safe", "0", "-i", list_name]
    if audio is not None:
        track_inputs, graph = mix_filter(audio, duration_s, first_input=1)
        for args in track_inputs:
            cmd += args
        cmd += ["-filter_complex", graph, "-map", "0:v:0", "-map", "[aout]", "-c:v", "copy"]
        cmd += ["-c:a", audio.codec, "-b:a", audio.bitrate, "-ar", str(audio.sample_rate)]
    else:
        cmd += ["-map", "0", "-c", "copy"]
    fmt = ["-f", "mp4"] if suffix.lower() in ("", ".mp4", ".m4v") else []
    return [*cmd, *fmt, "-movflags", "+faststart", str(tmp)]


def _run_ffmpeg_concat(cmd: list[str], output: Path, tmp: Path, total: int) -> None:
    """Run the join into `tmp` and check it holds every input frame; RenderError naming `output` if not."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise RenderError(f"{output}: ffmpeg concat failed: {detail}")
    got = count_packets(tmp)
    if got != total:
        raise RenderError(f"{output}: merged file has {got} frames, expected {total} (sum of inputs)")
