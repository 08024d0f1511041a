"""The encoder encodes while frames arrive: ffmpeg does not probe the piped images first (its default 5 MB
probe is about 60 frames of 720p JPEG, which turned a whole 60-frame chunk's encoding into a tail after
capture). Real ffmpeg, small JPEG frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fakes.waiting import wait_for

from helios_kit.render.encode import FrameEncoder, find_ffmpeg

FRAMES = 90


def jpeg_frames(count: int) -> list[bytes]:
    """`count` distinct 640x480 JPEG images (ffmpeg's test pattern), tens of KB each: all of them together are
    far below ffmpeg's default probe size."""
    pattern = f"testsrc2=size=640x480:rate=30:duration={count / 30}"
    argv = [find_ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", pattern, "-frames:v", str(count)]
    argv += ["-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "2", "-"]
    stream = subprocess.run(argv, capture_output=True, check=True).stdout
    frames = [b"\xff\xd8" + part for part in stream.split(b"\xff\xd8") if part]
    assert len(frames) == count and sum(map(len, frames)) < 5_000_000
    return frames


def test_frames_are_encoded_before_the_stream_ends(tmp_path: Path) -> None:
    frames = jpeg_frames(FRAMES)
    encoder = FrameEncoder(tmp_path / "out.mp4", fps=30, frame_count=FRAMES, image_format="jpeg")
    try:
        for image in frames[:-1]:
            encoder.put(image)
        # Every frame but the last is in: an encoder that probed its input would still be reading, its output
        # empty, until the stream closed.
        wait_for(lambda: encoder.temp_path.exists() and encoder.temp_path.stat().st_size > 4096, 60, "encoded output")
        encoder.put(frames[-1])
        output = encoder.finish()
    except BaseException:
        encoder.abort()
        raise
    probe = [find_ffmpeg(), "-v", "error", "-i", str(output), "-map", "0:v", "-f", "framemd5", "-"]
    lines = subprocess.run(probe, capture_output=True, check=True, text=True).stdout.splitlines()
    assert len([line for line in lines if not line.startswith("#")]) == FRAMES
