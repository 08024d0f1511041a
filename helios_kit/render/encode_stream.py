"""Mux an already encoded H.264 stream (Annex B, from the page's VideoEncoder) into the output by stream copy.

Same contract as :class:`~helios_kit.render.encode.FrameEncoder` (``put`` / ``finish`` / ``abort``, a writer
thread, a temp name renamed only on success), but ffmpeg only parses and muxes: ``-f h264`` at the render's
exact frame rate, ``-c:v copy``, constant frame rate, ``+faststart`` for MP4. Items are byte runs of encoded
chunks, not frames: the caller checks the frame count (the page reports one chunk per frame).
"""

from __future__ import annotations

from pathlib import Path

from helios_kit.render.encode import FrameEncoder, find_ffmpeg, rate, temp_path_for
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
        self.profile = profile
        self.output_path = Path(output_path)
        self.temp_path = temp_path_for(self.output_path)
        self.frame_count = frame_count
        self.frames_written = 0
        argv = [find_ffmpeg(), "-hide_banner", "-nostats", "-loglevel", "error", "-y"]
        argv += ["-f", "h264", "-framerate", rate(fps), "-i", "pipe:0", "-c:v", "copy", "-an"]
        argv += ["-r", rate(fps), "-fps_mode", "cfr", "-frames:v", str(frame_count)]
        if self.output_path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            argv += ["-movflags", "+faststart"]
        self._start([*argv, str(self.temp_path)], queue_size)
