"""Stand-in render functions with `render_range`'s signature, for worker tests that must not need Chromium.

* :func:`bytes_render` writes a tiny deterministic file (scale tests, store tests).
* :func:`frame_index_render` encodes a real video with ffmpeg whose frame n shows n as 10 black/white bars
  (binary, MSB left), so a merged output can be checked frame-exact without a browser.

Both can be selected out of process with `HELIOS_WORKER_RENDER=tests.fakes.renders:<name>`; the
`HELIOS_FAKE_RENDER_FAIL_FRAMES=a,b` environment variable makes any chunk containing one of those frames
fail permanently (a RenderError), and `HELIOS_FAKE_RENDER_SLEEP` adds seconds of work per chunk.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

BITS = 10


class FakeStats:
    def __init__(self, frames: int, input_location: str = "") -> None:
        self.frames = frames
        self.dependencies = _entry_dependencies(input_location)


def _entry_dependencies(input_location: str) -> list[Any]:
    """What a real render of a page loading nothing else records: its entry HTML file."""
    from helios_kit.composition import locate_entry
    from helios_kit.composition.deps import file_dependency

    try:
        _url, html_file = locate_entry(input_location)
    except Exception:
        return []
    if html_file is None:
        return []
    return [file_dependency(html_file.parent, html_file.name)]


def _common(start_frame: int, frame_count: int) -> None:
    from helios_kit.errors import RenderError

    failing = {int(x) for x in os.environ.get("HELIOS_FAKE_RENDER_FAIL_FRAMES", "").split(",") if x.strip()}
    if any(start_frame <= frame < start_frame + frame_count for frame in failing):
        raise RenderError(f"composition threw at frame {sorted(failing)[0]} (fake)")
    delay = float(os.environ.get("HELIOS_FAKE_RENDER_SLEEP", "0") or 0)
    if delay:
        time.sleep(delay)


def bytes_render(
    config: Any, *, input_location: str, start_frame: int, frame_count: int, output_path: Path, **_: Any
) -> FakeStats:
    _common(start_frame, frame_count)
    payload = f"{config.width}x{config.height}@{config.fps}|{input_location.rsplit('/', 1)[-1]}|"
    payload += f"{start_frame}+{frame_count}\n"
    body = payload.encode() + hashlib.sha256(payload.encode()).digest() * 4
    Path(output_path).write_bytes(body)
    return FakeStats(frame_count, input_location)


def frame_index_frames(width: int, height: int, start_frame: int, frame_count: int) -> bytes:
    """Gray8 frames: frame n is BITS vertical bars, white where bit (BITS-1-i) of n is set."""
    out = bytearray()
    bar = width // BITS
    for n in range(start_frame, start_frame + frame_count):
        row = bytearray(width)
        for i in range(BITS):
            if (n >> (BITS - 1 - i)) & 1:
                row[i * bar : (i + 1) * bar] = b"\xff" * bar
        out += bytes(row) * height
    return bytes(out)


def frame_index_render(
    config: Any, *, input_location: str, start_frame: int, frame_count: int, output_path: Path, **_: Any
) -> FakeStats:
    _common(start_frame, frame_count)
    frames = frame_index_frames(config.width, config.height, start_frame, frame_count)
    argv = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-s",
        f"{config.width}x{config.height}",
        "-r",
        f"{config.fps:g}",
        "-i",
        "-",
        "-c:v",
        config.video_codec,
        "-pix_fmt",
        config.pixel_format,
        "-crf",
        str(config.crf),
        "-g",
        str(frame_count),
        "-bf",
        "0",
        "-threads",
        "1",
        "-movflags",
        "+faststart",
        str(output_path),
    ]
    subprocess.run(argv, input=frames, check=True, capture_output=True)
    return FakeStats(frame_count, input_location)


def decode_frame_indexes(video: Path, width: int, height: int) -> list[int]:
    """Read back the frame numbers `frame_index_render` (or a frame-index composition) drew."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True,
        capture_output=True,
    ).stdout
    size = width * height
    bar = width // BITS
    values = []
    for offset in range(0, len(raw), size):
        frame = raw[offset : offset + size]
        row = frame[(height // 2) * width : (height // 2 + 1) * width]
        n = 0
        for i in range(BITS):
            n = (n << 1) | (1 if row[i * bar + bar // 2] > 128 else 0)
        values.append(n)
    return values
