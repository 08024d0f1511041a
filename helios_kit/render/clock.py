"""Virtual time: the init script that owns the page's clocks, and the per-frame seek that drives it.

The contract (copy for the README)
----------------------------------
At absolute frame *n* the page observes t = n / fps seconds since it loaded at t = 0, whichever chunk
renders it:

- ``performance.now()`` returns t*1000; ``Date.now()`` / ``new Date()`` return a fixed epoch
  (2024-01-01T00:00:00Z) + t*1000; ``document.timeline.currentTime`` returns t*1000.
- ``requestAnimationFrame`` callbacks run once per frame with timestamp t*1000. ``setTimeout``,
  ``setInterval`` and ``requestIdleCallback`` run in virtual time, in order of their due times (ties in the
  order they were set), each seeing ``performance.now()`` equal to its own due time; promise chains settle
  between callbacks.
- CSS animations, CSS transitions and Web Animations are paused and seeked to virtual time, each relative to
  the virtual time it was created at (an animation created by a timer at t0 shows its state at t - t0).
  The page's own ``play()``, ``pause()`` and ``currentTime`` writes act in virtual time (``play()`` after
  the end restarts). When an animation reaches its end at a frame, ``finish`` (``onfinish``), the
  ``finished`` promise and, for CSS, ``animationend`` / ``transitionend`` fire at that frame, before its
  rAF callbacks; likewise ``animationstart``, ``animationiteration``, ``transitionrun`` and
  ``transitionstart`` fire at the frame whose virtual time crosses their boundary (the browser's own CSS
  events, which it sends whenever it next updates a seeked animation, are held back). ``reverse()``,
  ``updatePlaybackRate()`` and ``playbackRate`` writes change the virtual rate with no jump in local time
  (``reverse()`` at the start rewinds to the end, as ``play()`` at the end restarts); a reversed animation
  finishes at its start.
- Media elements (document, every shadow root, same-origin iframes) never play in real time. Each
  ``<video>`` is paused and seeked to ``max(0, (t - offset) * rate + seek)`` (modulo its duration when
  ``loop``; ``offset``/``seek`` from ``data-helios-offset``/``data-helios-seek``, ``rate`` its
  ``playbackRate`` property as first seen, else the attribute), where t is the composition's time when the
  page drives a Helios instance or the element names an offset or seek, else the time since it appeared;
  the frame waits until the seeked picture is decoded and presented (``requestVideoFrameCallback``). A
  video without a source is skipped; add ``data-helios-manual`` to seek one yourself. The composition's
  folder is served with HTTP range support so media can seek.
- Before the first frame the renderer waits until no ``fetch``/``XMLHttpRequest`` (nor a body read) is in
  flight, then awaits ``document.fonts.ready`` and decodes every ``<img>``, video poster, SVG ``<image>``
  and CSS ``background-image``/``mask-image``.
- Randomness is seeded: ``Math.random``, ``crypto.getRandomValues`` and ``crypto.randomUUID`` draw from
  streams seeded by the render's ``seed`` (JobSpec ``config.seed``, the meta tag's ``"seed"``, ``--seed``;
  default 0), the same sequence from page load in every chunk and every run; ``performance.timeOrigin``
  is the fixed epoch.
- WebGL contexts are created with ``preserveDrawingBuffer: true`` so the canvas capture can read them.
- Reaching a chunk's first frame N: the page loads at t = 0, then every frame 0..N-1 is stepped exactly as in
  a full render (timers, rAF, animations) but without capture, so libraries with lag smoothing (GSAP drops
  gaps > 500 ms) or that measure from their first tick (``THREE.Clock``, anime.js) see the same ticks. This
  costs the page's own per-frame script (~0.05-0.2 ms per frame for the test fixtures), never a screenshot.

``window.helios`` (defined before any page script runs)
-------------------------------------------------------
- ``window.__HELIOS_PROPS__`` and ``helios.props``: the render's props, before any page script runs.
- A page may assign its own object. A plain object (``window.helios = {seek}``) hands its hooks to ours.
  An object of a class becomes ``window.helios`` itself and is lent our members it lacks (``delayRender``,
  ``continueRender``, ``statelessCanvas``, ``props``, ``frame``, ``time``). When it is a
  ``@helios-project/core`` ``Helios`` (``seek``, ``subscribe``, an ``fps`` signal) it is driven as the
  original seek driver drives it, every frame including fast-forward: ``window.__HELIOS_VIRTUAL_TIME__`` is
  set to the frame's ms (nudged by an ulp or two so a bound instance's ``(ms / 1000) * fps`` is the integer
  frame; where no double gives it, the nearest above), after timers and before rAF; ``helios.seek(frame)``
  with the integer frame (the exact instance frame when its fps differs from the render's) after rAF;
  then animations; then ``await helios.waitUntilStable()`` (render timeout, ``timeout: frame N never
  became ready (helios.waitUntilStable() ...)``), after which the instance and the GSAP timeline are
  sought again. Media without a source are kept out of the DomDriver's wait (they never get ready).
- With ``autoSyncAnimations`` on that instance, every animation's time is composition time (created at
  1 s, it shows its state at t, as in Helios's player), instead of the time since it was created.
- ``window.__helios_gsap_timeline__``: sought to t (seconds) every frame, after the seek.
- Same-origin iframes run this script too; each frame steps their shims to the same frame (fast-forward
  included), so their clocks, Helios instances and media follow the page's.
- ``helios.seek = (frame, timeSeconds) => { ... }`` (or ``window.helios = {seek}``): called at every frame
  after timers and rAF callbacks; may return a Promise, which the frame waits for.
- ``const handle = helios.delayRender(label?)`` / ``helios.continueRender(handle)``: the frame is not
  captured until every handle is continued. Waiting longer than the render timeout (30 s by default) fails
  the render with ``timeout: frame N never became ready (label)``.
- ``helios.statelessCanvas = true``: the composition repaints its whole 2D canvas from the time alone at
  every frame, so the renderer may skip 2D drawing while fast-forwarding to a chunk's first frame (WebGL
  draws into the default framebuffer are always skipped there: that buffer is cleared every frame).
- ``helios.frame``, ``helios.time`` (seconds), ``helios.fps``: read-only.
- An uncaught error or unhandled rejection in the page fails the render with its message and frame number.

Why a shim, not ``Emulation.setVirtualTimePolicy`` (measured here, chromium 156, frame-index fixture at
320x240): CDP virtual time did drive rAF, ``performance.now`` and ``setTimeout`` right, but CSS animations
kept following wall-clock time (the CSS row read 0, 2, 10, 20, 25, ... instead of 0..7), and each frame
cost ~210 ms waiting for the budget to expire, against ~15-40 ms per captured frame with the shim. It also
only moves forward in budgets whose split the browser decides, and cannot seek animations created later
relative to their creation time. With the shim, frame n is a pure function of the per-frame steps 0..n
(what chunk invariance needs), and fast-forwarding runs inside the page in one ``Runtime.evaluate`` per
600 frames (5 minutes at 30 fps: ~0.6-1.7 s for DOM/CSS/GSAP fixtures; WebGL draws into the default
framebuffer are skipped while fast-forwarding, so three.js takes ~0.25 s instead of 110 s).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

#: The fixed wall-clock epoch virtual time starts at (2024-01-01T00:00:00Z), in ms.
EPOCH_MS = 1_704_067_200_000


@lru_cache(maxsize=1)
def _shim_source() -> str:
    return resources.files("helios_kit.render").joinpath("clock.js").read_text(encoding="utf-8")


def init_script(fps: float, timeout_s: float = 30.0, props: Mapping[str, Any] | None = None, seed: int = 0) -> str:
    """The script to install with Page.addScriptToEvaluateOnNewDocument for a render at `fps`.

    `props` reach the page as ``window.__HELIOS_PROPS__`` (and ``window.helios.props``) before any page
    script runs; `seed` seeds ``Math.random``, ``crypto.getRandomValues`` and ``crypto.randomUUID``."""
    config = {
        "fps": fps,
        "epoch": EPOCH_MS,
        "timeoutMs": int(timeout_s * 1000),
        "props": dict(props or {}),
        "seed": int(seed),
    }
    return f"window.__HELIOS_CONFIG__ = {json.dumps(config)};\n{_shim_source()}"


def step_expression(frame: int, steps_from: int | None = None) -> str:
    """JS that advances virtual time to `frame` (timers, rAF, animations, videos) before a DOM capture; with
    `steps_from` (the page is at that earlier frame), first steps the frames before `frame` without capture,
    in the same evaluation (a lane of a render in several browsers skips the frames the others capture)."""
    step = f"window.__heliosInternal.step({int(frame)}, true)"
    if steps_from is None or steps_from >= frame:
        return step
    return f"{fast_forward_expression(steps_from, frame)}.then((skipped) => skipped || {step})"


def fast_forward_expression(start: int, stop: int) -> str:
    """JS that steps frames [start, stop) without capturing (same per-frame work as a render)."""
    return f"window.__heliosInternal.fastForward({int(start)}, {int(stop)})"


def step_and_capture_expression(frame: int, image_type: str, quality: float) -> str:
    """JS that steps to `frame` and returns the composition's canvas as base64 (canvas capture)."""
    return f"window.__heliosInternal.stepAndCapture({int(frame)}, {json.dumps(image_type)}, {quality})"


PREPARE_EXPRESSION = "window.__heliosInternal.prepare()"
SETTINGS_EXPRESSION = "window.__heliosInternal.compositionSettings()"
INSTALLED_EXPRESSION = "typeof window.__heliosInternal === 'object'"
