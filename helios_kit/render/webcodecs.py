"""Canvas capture encoded in the page: WebCodecs ``VideoEncoder`` (H.264) straight into ffmpeg's mux.

Opt-in with ``HELIOS_CANVAS_WEBCODECS=1`` for canvas renders whose settings are ``libx264`` / ``yuv420p``
and not lossless. Each frame is stepped, the canvas (composited over the page background, as the image path
does) becomes a ``VideoFrame`` and goes to the browser's software H.264 encoder; the encoded chunks come back
over CDP (one evaluation per frame, which also steps the next frame) and are muxed by ffmpeg with a stream
copy (:class:`~helios_kit.render.encode_stream.StreamCopyEncoder`): no JPEG, no image decode, no x264.

The encoder is configured by bitrate (Chromium's H.264 encoder takes no per-frame quantizer), not by crf:
:func:`bitrate_for` gives 0.4 bits per pixel per frame. Frame n is still the page's frame n (the same step);
only the compression differs from the x264 path. Every chunk of a job starts with a keyframe and carries its
parameter sets in-band (Annex B), so chunks rendered this way join by stream copy with each other, not with
x264 chunks: use it for a whole job or not at all.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

from helios_kit.errors import RenderError
from helios_kit.render.browser import Page
from helios_kit.render.capture import FrameError, run_step
from helios_kit.render.encode import FrameEncoder
from helios_kit.render.profile import NULL_PROFILER, Profiler

#: H.264 High profile, level 5.1 (up to 4096x2304); Chromium's software encoder takes it.
CODEC = "avc1.640033"

#: In-page side: set up the encoder once, then step + encode one frame per call.
SETUP_JS = r"""
(async (config) => {
  if (typeof VideoEncoder === "undefined") return { error: "VideoEncoder is not available in this browser" };
  const support = await VideoEncoder.isConfigSupported(config);
  if (!support.supported) return { error: "VideoEncoder does not support " + config.codec };
  const state = { pending: [], error: null, frames: 0, scratch: null };
  state.encoder = new VideoEncoder({
    output: (chunk) => { const data = new Uint8Array(chunk.byteLength); chunk.copyTo(data); state.pending.push(data); },
    error: (error) => { state.error = String(error && error.message || error); },
  });
  state.encoder.configure(config);
  const background = () => {
    for (const el of [document.body, document.documentElement]) {
      if (!el) continue;
      const color = getComputedStyle(el).backgroundColor;
      if (color && color !== "transparent" && !/^rgba\(.*,\s*0\)$/.test(color)) return color;
    }
    return "#ffffff";
  };
  const composite = () => {
    const canvases = document.querySelectorAll("canvas");
    if (canvases.length !== 1) throw new Error("canvas capture: the page has no single canvas");
    const canvas = canvases[0];
    if (!state.scratch) {
      state.scratch = new OffscreenCanvas(canvas.width, canvas.height);
      state.context = state.scratch.getContext("2d", { alpha: false });
    }
    state.context.fillStyle = background();
    state.context.fillRect(0, 0, state.scratch.width, state.scratch.height);
    state.context.drawImage(canvas, 0, 0);
    return state.scratch;
  };
  const drain = async () => {
    if (state.error) return { error: "VideoEncoder: " + state.error };
    if (!state.pending.length) return { data: null, chunks: 0 };
    const chunks = state.pending.length;
    const blob = new Blob(state.pending);
    state.pending = [];
    const url = await new Promise((resolve) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.readAsDataURL(blob);
    });
    return { data: url.slice(url.indexOf(",") + 1), chunks };
  };
  window.__heliosWebCodecs = {
    async frame(frame) {
      const result = await window.__heliosInternal.step(frame, true);
      if (result && result.error) return result;
      const video = new VideoFrame(composite(), { timestamp: Math.round(state.frames * 1e6 / config.framerate) });
      state.encoder.encode(video, { keyFrame: state.frames === 0 });
      video.close();
      state.frames++;
      return drain();
    },
    async flush() {
      await state.encoder.flush();
      const out = await drain();
      state.encoder.close();
      return out;
    },
  };
  return { ok: true };
})
"""


def bitrate_for(width: int, height: int, fps: float) -> int:
    """Bits per second for 0.4 bits per pixel per frame (on the particles example at 1280x720 about the
    bytes of x264 superfast at crf 18), at least 1 Mbit/s so that small renders keep sharp edges."""
    return max(1_000_000, int(width * height * fps * 0.4))


def wanted(video_codec: str, pixel_format: str, lossless: bool) -> bool:
    """HELIOS_CANVAS_WEBCODECS=1 and settings the in-page H.264 encoder can honour."""
    on = os.environ.get("HELIOS_CANVAS_WEBCODECS", "") not in ("", "0")
    return on and video_codec == "libx264" and pixel_format == "yuv420p" and not lossless


class WebCodecsCapture:
    """Step the page and encode its canvas in the page; `frames` returns encoded H.264 (Annex B) bytes."""

    mode = "canvas"
    encoded = True
    profile: Profiler = NULL_PROFILER

    def __init__(self, page: Page, fps: float, timeout: float) -> None:
        self.page = page
        self.timeout = timeout
        config = {
            "codec": CODEC,
            "width": page.width,
            "height": page.height,
            "bitrate": bitrate_for(page.width, page.height, fps),
            "bitrateMode": "variable",
            "framerate": fps,
            "latencyMode": "quality",
            "avc": {"format": "annexb"},
        }
        result = page.evaluate(f"({SETUP_JS})({json.dumps(config)})", timeout=timeout)
        if not isinstance(result, dict) or result.get("error"):
            error = result.get("error") if isinstance(result, dict) else "no answer"
            raise RenderError(f"HELIOS_CANVAS_WEBCODECS: {error}")
        #: Encoded chunks received so far (one per frame when the render is complete).
        self.chunks = 0

    def frames(self, frame: int) -> list[bytes]:
        expression = f"window.__heliosWebCodecs.frame({int(frame)})"
        result = run_step(self.page, expression, frame, self.timeout, self.profile, "page step + VideoEncoder")
        return self._bytes(result, frame)

    def flush(self) -> list[bytes]:
        try:
            result = run_step(self.page, "window.__heliosWebCodecs.flush()", -1, self.timeout, self.profile, "flush")
        except FrameError as error:
            raise RenderError(f"canvas encoding failed at the end: {error.message}") from None
        return self._bytes(result, -1)

    def _bytes(self, result: Any, frame: int) -> list[bytes]:
        if not isinstance(result, dict):
            return []
        if result.get("error"):
            raise RenderError(f"canvas encoding failed at frame {frame}: {result['error']}")
        self.chunks += int(result.get("chunks") or 0)
        with self.profile.phase("base64 decode"):
            return [base64.b64decode(result["data"])] if result.get("data") else []


def encode_frames(
    capture: WebCodecsCapture,
    encoder: FrameEncoder,
    start_frame: int,
    frame_count: int,
    check_cancel: Callable[[], None],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Step frames [start_frame, start_frame + frame_count) with the in-page encoder, streaming its output
    into `encoder`; RenderError unless the page produced exactly one encoded chunk per frame."""
    for index in range(frame_count):
        check_cancel()
        for data in capture.frames(start_frame + index):
            encoder.put(data)
        if progress is not None:
            progress(index + 1, frame_count)
    for data in capture.flush():
        encoder.put(data)
    if capture.chunks != frame_count:
        raise RenderError(f"canvas encoder produced {capture.chunks} frames, expected {frame_count}")
