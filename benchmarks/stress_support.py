"""What the stress benchmarks share: busy loops that load the cores, and reading the number a captured frame
shows as a row of black and white bars (most significant bit left, white = 1)."""

from __future__ import annotations

import contextlib
import multiprocessing
import subprocess
from collections.abc import Iterator


def _spin() -> None:  # pragma: no cover - a load generator
    while True:
        pass


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each while the block runs."""
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in busy:
        process.start()
    try:
        yield
    finally:
        for process in busy:
            process.terminate()


def decode_bar_numbers(images: list[bytes], width: int, height: int, bits: int) -> list[int]:
    """The number each captured image (JPEG) shows in `bits` bars across its middle row."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "mjpeg", "-i", "-", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        input=b"".join(images),
        capture_output=True,
        check=True,
    ).stdout
    values, bar = [], width // bits
    for offset in range(0, len(raw), width * height):
        row = raw[offset + (height // 2) * width : offset + (height // 2 + 1) * width]
        number = 0
        for i in range(bits):
            number = (number << 1) | (1 if row[i * bar + bar // 2] > 128 else 0)
        values.append(number)
    return values
