"""Mux an already encoded H.264 stream (Annex B, from the page's VideoEncoder) into the output by stream copy.

Same contract as :class:`~helios_kit.render.encode.FrameEncoder` (``put`` / ``finish`` / ``abort``, a writer
thread, a temp name renamed only on success), but ffmpeg only parses and muxes: ``-f h264`` at the render's
exact frame rate, ``-c:v copy``, constant frame rate, ``+faststart`` for MP4. Items are byte runs of encoded
chunks, not frames: the caller checks the frame count (the page reports one chunk per frame).
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg

from helios_kit.render.encode import FrameEncoder, container_args, rate
from helios_kit.render.profile import NULL_PROFILER, Profiler


class StreamCopyEncoder(FrameEncoder):
    """ffmpeg remuxing raw H.264 from stdin into the output container."""

    items_are_frames = False

    def __init__(
        self,
        output_path: Path,
        *,
        fps: float,
        frame_count: int,
        queue_size: int = 64,
        profile: Profiler = NULL_PROFILER,
    ) -> None:
        self._open(output_path, frame_count, profile)
        stream = ffmpeg.input("pipe:0", format="h264", framerate=rate(fps))
        options = {"vcodec": "copy", "an": None, "r": rate(fps), "fps_mode": "cfr", "frames:v": frame_count}
        options.update(container_args(self.output_path.suffix))
        self._start(ffmpeg.output(stream, str(self.temp_path), **options), queue_size)
