"""Encode a stream of still images (JPEG or PNG bytes) into a video with ffmpeg, through a pipe.

Frames go to ffmpeg's stdin (``image2pipe``) from a writer thread, so capture and encoding overlap and no
image ever touches the disk. Every chunk of a job is encoded with the same arguments (codec, pixel format,
quality, preset, time base, keyframe at the first frame, constant frame rate), which is what lets
``helios merge`` join chunks by stream copy. The output is written under a temporary name in the target
directory and renamed by :meth:`FrameEncoder.finish` only when ffmpeg succeeded and wrote exactly the
expected number of frames; anything else removes it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import threading
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import ffmpeg

from helios_kit.errors import RenderError
from helios_kit.render.browser import kill_group, popen_guarded, wait_exit
from helios_kit.render.profile import NULL_PROFILER, Profiler

ImageFormat = Literal["jpeg", "png"]

#: x264/x265 preset used for every chunk (speed matters: capture and encode share two cores). Measured on 60
#: 1280x720 frames piped as JPEG (ffmpeg CPU seconds, output bytes at crf 18): titles veryfast 2.00 s /
#: 500 KB, superfast 1.19 s / 974 KB, ultrafast 0.75 s / 1.38 MB; particles 2.86 s / 2.26 MB, 1.76 s /
#: 3.06 MB, 1.11 s / 4.05 MB. Most of superfast's larger files come from dropping mbtree: see X264_SEARCH.
X264_PRESET = "veryfast"
#: x264's motion search and partitions taken from superfast, keeping veryfast's mbtree and lookahead (which
#: are what keep its files small). Measured on the same JPEG streams, ffmpeg 5.1, best of 3 (CPU seconds,
#: bytes, SSIM against the captured frames): titles 1.05 s / 439 KB / 0.99574 plain veryfast, 0.74 s / 459 KB /
#: 0.99556 with these, 0.76 s / 1010 KB superfast; particles 1.60 s / 2478 KB / 0.9814, 1.10 s / 2880 KB /
#: 0.9818, 1.17 s / 3512 KB; helios-counter 0.55 s / 73 KB, 0.47 s / 85 KB, 0.47 s / 156 KB. A DOM render is
#: CPU-bound on both cores, and ffmpeg was a fifth of its CPU: 30% of that is worth files 5-16% larger.
X264_SEARCH = "me=dia:subme=1:partitions=i8x8,i4x4"
#: Input options for a piped image stream whose codec and rate are given: no probing. By default ffmpeg
#: reads up to 5 MB of input (``probesize``) before it starts the output, which at 1280x720 JPEG is about
#: 60 frames: a 60-frame chunk was encoded only after its last frame arrived (a 1.0 s tail after capture,
#: 0.2 s without probing, measured feeding 60 frames at 8/s). The frames are the same either way (framemd5
#: compared on ffmpeg 5.1 and 9.0, JPEG and PNG): the decoder takes the size from the first frame.
NO_PROBING: dict[str, object] = {"probesize": 32, "analyzeduration": 0}
_LOSSLESS_CODECS = {"ffv1", "png", "qtrle", "rawvideo", "utvideo", "huffyuv", "ffvhuff"}
_X26X = {"libx264", "libx264rgb", "libx265"}
_X264 = {"libx264", "libx264rgb"}


def find_ffmpeg() -> str:
    """ffmpeg: HELIOS_FFMPEG, else /usr/bin/ffmpeg or the one on PATH, else imageio-ffmpeg's binary."""
    env = os.environ.get("HELIOS_FFMPEG")
    if env:
        path = shutil.which(env) or env
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RenderError(f"HELIOS_FFMPEG={env}: not an executable file")
        return path
    for candidate in ("/usr/bin/ffmpeg", shutil.which("ffmpeg")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        raise RenderError(
            "no ffmpeg found: install it (apt-get install ffmpeg, or pip install imageio-ffmpeg) "
            "or set HELIOS_FFMPEG=/path/to/ffmpeg"
        ) from None


def rate(fps: float) -> str:
    """fps as the exact fraction ffmpeg should use (29.97 -> 2997/100; ffmpeg would read "29.97" as NTSC)."""
    fraction = Fraction(repr(float(fps))).limit_denominator(1_000_000)
    return f"{fraction.numerator}/{fraction.denominator}"


def is_lossless(video_codec: str, crf: int) -> bool:
    """Whether this codec/quality pair keeps every pixel (then frames are captured as PNG, not JPEG)."""
    return video_codec in _LOSSLESS_CODECS or (video_codec in _X26X and crf == 0)


def output_args(
    *, video_codec: str, pixel_format: str, crf: int, fps: float, frame_count: int, suffix: str
) -> dict[str, object]:
    """The ffmpeg output options shared by every chunk of a job (pure function, so chunks agree)."""
    args: dict[str, object] = {
        "vcodec": video_codec,
        "pix_fmt": pixel_format,
        "r": rate(fps),
        "fps_mode": "cfr",
        "force_key_frames": "expr:eq(n,0)",
        "frames:v": frame_count,
        "an": None,
    }
    if video_codec in _X26X:
        args["preset"] = X264_PRESET
        if video_codec in _X264:
            args["x264-params"] = X264_SEARCH
        if crf == 0:
            args["qp"] = 0
        else:
            args["crf"] = crf
    elif video_codec in ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"):
        args["crf"] = crf
        args["b:v"] = 0
    return {**args, **container_args(suffix)}


def container_args(suffix: str) -> dict[str, object]:
    """Output options of the container alone: MP4-family files start with their index (``+faststart``)."""
    return {"movflags": "+faststart"} if suffix.lower() in (".mp4", ".mov", ".m4v") else {}


def temp_path_for(output_path: Path) -> Path:
    """A hidden temporary name in the output's directory, keeping its suffix so ffmpeg picks the muxer."""
    return output_path.with_name(f".{output_path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{output_path.suffix}")


def check_output_dir(output_path: Path) -> None:
    """RenderError unless a file can be created next to `output_path`."""
    parent = output_path.parent
    if not parent.exists():
        raise RenderError(f"output directory does not exist: {parent}")
    if not parent.is_dir():
        raise RenderError(f"output directory is not a directory: {parent}")
    probe = parent / f".helios-write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp"
    try:
        probe.open("xb").close()
    except OSError as error:
        raise RenderError(f"output directory not writable: {parent} ({error.strerror})") from None
    with contextlib.suppress(OSError):
        probe.unlink()


class FrameEncoder:
    """ffmpeg fed from a queue by a writer thread. ``put(bytes)`` per frame, then ``finish()`` or ``abort()``."""

    def __init__(
        self,
        output_path: Path,
        *,
        fps: float,
        frame_count: int,
        image_format: ImageFormat,
        video_codec: str = "libx264",
        pixel_format: str = "yuv420p",
        crf: int = 18,
        queue_size: int = 16,
        profile: Profiler = NULL_PROFILER,
    ) -> None:
        self._open(output_path, frame_count, profile)
        stream = ffmpeg.input(
            "pipe:0",
            format="image2pipe",
            vcodec="mjpeg" if image_format == "jpeg" else "png",
            framerate=rate(fps),
            **NO_PROBING,
        )
        options = output_args(
            video_codec=video_codec,
            pixel_format=pixel_format,
            crf=crf,
            fps=fps,
            frame_count=frame_count,
            suffix=self.output_path.suffix,
        )
        self._start(ffmpeg.output(stream, str(self.temp_path), **options), queue_size)

    #: finish() checks that exactly frame_count items were written (one image per frame).
    items_are_frames = True

    def _open(self, output_path: Path, frame_count: int, profile: Profiler) -> None:
        """The output this encoder writes (through a temporary name) and its counters."""
        self.profile = profile
        self.output_path = Path(output_path)
        self.temp_path = temp_path_for(self.output_path)
        self.frame_count = frame_count
        self.frames_written = 0

    def _start(self, stream: Any, queue_size: int = 16) -> None:
        """Start ffmpeg on `stream` (an ffmpeg-python output) with its stdin fed by the writer thread."""
        self.argv = [find_ffmpeg(), "-hide_banner", "-nostats", "-loglevel", "error", "-y", *stream.get_args()]
        try:
            self.process = popen_guarded(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as error:
            raise RenderError(f"cannot start ffmpeg {self.argv[0]}: {error.strerror}") from None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._stderr = bytearray()
        self._write_error: str | None = None
        self._writer = threading.Thread(target=self._write_loop, name="ffmpeg-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True)
        self._writer.start()
        self._reader.start()

    def _write_loop(self) -> None:
        assert self.process.stdin is not None
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self._write_error is not None:
                continue  # drain so put() never blocks forever
            try:
                with self.profile.phase("pipe write (thread)"):
                    self.process.stdin.write(item)
                self.frames_written += 1
            except (BrokenPipeError, OSError) as error:
                self._write_error = str(error)
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if len(self._stderr) < 64 << 10:
                self._stderr.extend(line)

    @property
    def failed(self) -> bool:
        return self._write_error is not None or self.process.poll() not in (None, 0)

    def error_line(self) -> str:
        text = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return text[-1] if text else (self._write_error or f"exit code {self.process.returncode}")

    def put(self, image: bytes) -> None:
        """Queue one encoded image (blocks when ffmpeg is behind, so memory stays bounded)."""
        if self.failed:
            self.process.poll()
            raise RenderError(f"ffmpeg failed: {self.error_line()}")
        with self.profile.phase("encoder queue wait"):
            self._queue.put(image)

    def finish(self, timeout: float = 300.0) -> Path:
        """Close the stream, wait for ffmpeg, check it, rename the temp file onto the output path."""
        self._queue.put(None)
        try:
            with self.profile.phase("ffmpeg tail (after last frame)"):
                self._writer.join(timeout)
                code = wait_exit(self.process, timeout)
        except subprocess.TimeoutExpired:
            self.abort()
            raise RenderError(f"ffmpeg did not finish within {timeout:g} s") from None
        self._reader.join(5)
        if code != 0 or self._write_error is not None:
            message = self.error_line()
            self.abort()
            raise RenderError(f"ffmpeg failed: {message}")
        if self.items_are_frames and self.frames_written != self.frame_count:
            self.abort()
            raise RenderError(f"encoder got {self.frames_written} frames, expected {self.frame_count}")
        os.replace(self.temp_path, self.output_path)
        return self.output_path

    def abort(self) -> None:
        """Kill ffmpeg and remove the temporary output. Safe to call more than once."""
        self._write_error = self._write_error or "aborted"
        while True:  # make room for the stop marker even when the queue is full
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        kill_group(self.process, grace_s=0.1)
        with contextlib.suppress(OSError):
            self.temp_path.unlink()
