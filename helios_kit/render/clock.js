// helios-kit virtual time: installed before any page script (Page.addScriptToEvaluateOnNewDocument).
// The renderer drives it with __heliosInternal.step(frame); see render/clock.py for the contract.
(() => {
  "use strict";
  if (window.__heliosInternal) return;
  const CONFIG = window.__HELIOS_CONFIG__ || { fps: 30, epoch: 1704067200000, timeoutMs: 30000, props: {}, seed: 0 };
  const FPS = CONFIG.fps;
  const EPOCH = CONFIG.epoch;
  // The render's input props, before any page script (Helios compositions pass them on as inputProps).
  const PROPS = CONFIG.props && typeof CONFIG.props === "object" ? CONFIG.props : {};
  window.__HELIOS_PROPS__ = PROPS;
  // The original Helios seek driver's clock: frame time in ms, set every frame. A plain, configurable data
  // property, so @helios-project/core's bindToDocumentTimeline() can hook it with a setter.
  window.__HELIOS_VIRTUAL_TIME__ = 0;
  const EPS = 1e-6; // ms: absorbs float drift of accumulated timer delays

  const realSetTimeout = window.setTimeout.bind(window);
  const realClearTimeout = window.clearTimeout.bind(window);
  const realRaf = window.requestAnimationFrame.bind(window);
  const RealDate = window.Date;
  const realAnimate = Element.prototype.animate;
  const realGetContext = HTMLCanvasElement.prototype.getContext;

  let now = 0; // virtual ms since load
  let currentFrame = 0;
  const errors = [];
  const record = (message) => { if (errors.length < 20) errors.push(String(message)); };
  window.addEventListener("error", (event) => {
    if (event && event.error !== undefined) {
      record(event.message || (event.error && event.error.message) || String(event.error));
    } else if (event && event.message) {
      record(event.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason;
    record("Unhandled promise rejection: " + (reason && reason.message ? reason.message : String(reason)));
  });

  // ---- clocks ------------------------------------------------------------------------------------
  const perfNow = () => now;
  try { Object.defineProperty(Performance.prototype, "now", { value: perfNow, configurable: true, writable: true }); }
  catch (e) { performance.now = perfNow; }

  // ---- randomness: seeded, so every chunk and every run draws the same numbers from page load --------
  // Math.random and crypto.getRandomValues / randomUUID come from two sfc32 streams seeded by the render's
  // seed (JobSpec config.seed, meta "seed", --seed); performance.timeOrigin is the fixed epoch.
  const SEED = (Number(CONFIG.seed) >>> 0) || 0;
  const sfc32 = (a, b, c, d) => () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t >>> 0;
  };
  const seededStream = (salt) => {
    const next = sfc32(0x9e3779b9 ^ salt, 0x243f6a88 ^ SEED, 0xb7e15162 ^ salt, SEED ^ 0x85a308d3);
    for (let i = 0; i < 15; i++) next(); // mix the seed in before the first draw
    return next;
  };
  const mathStream = seededStream(0x6d617468);
  const cryptoStream = seededStream(0x63727970);
  Math.random = () => mathStream() / 4294967296;
  if (window.crypto) {
    const fill = (array) => {
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      for (let i = 0; i < bytes.length; i++) bytes[i] = cryptoStream() & 0xff;
      return array;
    };
    try { Object.defineProperty(Crypto.prototype, "getRandomValues", { value: fill, configurable: true, writable: true }); }
    catch (e) { window.crypto.getRandomValues = fill; }
    const uuid = () => {
      const b = fill(new Uint8Array(16));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    };
    try { Object.defineProperty(Crypto.prototype, "randomUUID", { value: uuid, configurable: true, writable: true }); }
    catch (e) { window.crypto.randomUUID = uuid; }
  }
  try { Object.defineProperty(Performance.prototype, "timeOrigin", { get: () => EPOCH, configurable: true }); }
  catch (e) { /* read-only in this browser: left as is */ }

  function VirtualDate(...args) {
    if (!new.target) return new RealDate(EPOCH + now).toString();
    if (args.length === 0) return new RealDate(EPOCH + now);
    return new RealDate(...args);
  }
  VirtualDate.prototype = RealDate.prototype;
  VirtualDate.now = () => Math.floor(EPOCH + now);
  VirtualDate.parse = RealDate.parse;
  VirtualDate.UTC = RealDate.UTC;
  Object.setPrototypeOf(VirtualDate, RealDate);
  window.Date = VirtualDate;

  try {
    const desc = Object.getOwnPropertyDescriptor(AnimationTimeline.prototype, "currentTime");
    Object.defineProperty(AnimationTimeline.prototype, "currentTime", {
      configurable: true,
      get() { return this === document.timeline ? now : desc.get.call(this); },
    });
  } catch (e) { /* older engines */ }

  // ---- timers ------------------------------------------------------------------------------------
  let nextId = 1;
  let seq = 0;
  const timers = new Map(); // id -> {due, seq, fn, args, interval}
  function addTimer(fn, delay, args, repeat) {
    const id = nextId++;
    const ms = Math.max(0, Number(delay) || 0);
    timers.set(id, { due: now + ms, seq: seq++, fn, args, interval: repeat ? Math.max(ms, 1) : null });
    return id;
  }
  window.setTimeout = (fn, delay, ...args) => addTimer(fn, delay, args, false);
  window.setInterval = (fn, delay, ...args) => addTimer(fn, delay, args, true);
  window.clearTimeout = (id) => { timers.delete(id); };
  window.clearInterval = window.clearTimeout;
  window.requestIdleCallback = (fn) => addTimer(() => fn({ didTimeout: false, timeRemaining: () => 50 }), 0, [], false);
  window.cancelIdleCallback = window.clearTimeout;

  function nextDue(limit) {
    let best = null;
    for (const [id, t] of timers) {
      if (t.due <= limit + EPS && (best === null || t.due < best[1].due || (t.due === best[1].due && t.seq < best[1].seq))) {
        best = [id, t];
      }
    }
    return best;
  }

  // ---- requestAnimationFrame: once per frame, timestamp = frame time ------------------------------
  let rafId = 1;
  let rafQueue = new Map();
  window.requestAnimationFrame = (fn) => { const id = rafId++; rafQueue.set(id, fn); return id; };
  window.cancelAnimationFrame = (id) => { rafQueue.delete(id); };

  // ---- macrotask yield (lets microtasks and promise chains settle between callbacks) ---------------
  const channel = new MessageChannel();
  const yieldWaiters = [];
  channel.port1.onmessage = () => { const w = yieldWaiters.shift(); if (w) w(); };
  const macrotask = () => new Promise((resolve) => { yieldWaiters.push(resolve); channel.port2.postMessage(0); });

  // ---- requests in flight (fetch, its body reads, XMLHttpRequest) -----------------------------------
  // A composition often sets itself up after loading something (a module's top-level `await fetch(...)`,
  // then `window.helios = helios`); the load event does not wait for that. Frame 0 does.
  const pendingRequests = new Map(); // id -> url
  let requestSeq = 0;
  function track(url, promise) {
    const id = ++requestSeq;
    pendingRequests.set(id, String(url).slice(0, 200));
    const done = () => { pendingRequests.delete(id); };
    promise.then(done, done);
    return promise;
  }
  const realFetch = window.fetch;
  if (typeof realFetch === "function") {
    window.fetch = function (input, init) {
      const url = input && typeof input === "object" && "url" in input ? input.url : input;
      return track(url, realFetch.call(this, input, init));
    };
    for (const name of ["arrayBuffer", "blob", "formData", "json", "text", "bytes"]) {
      const real = Response.prototype[name];
      if (typeof real !== "function") continue;
      Response.prototype[name] = function (...args) { return track(this.url, real.apply(this, args)); };
    }
  }
  const realSend = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (...args) {
    const xhr = this;
    track(xhr.responseURL || "XMLHttpRequest", new Promise((resolve) => xhr.addEventListener("loadend", resolve)));
    return realSend.apply(this, args);
  };

  function invoke(fn, args, what) {
    try {
      if (typeof fn === "function") fn(...args);
      else if (typeof fn === "string") (0, eval)(fn);
    } catch (error) {
      record((error && error.stack ? String(error.stack).split("\n")[0] : String(error)) + " (in " + what + ")");
    }
  }

  // ---- animations (CSS animations, CSS transitions, Web Animations) -----------------------------
  // Each managed animation really stays paused; its virtual state is a start time t0 (local time =
  // (now - t0) * rate) or, when the page paused it, a held local time. The page's own play(), pause() and
  // currentTime writes update that state instead of the real (wall-clock) playback.
  const born = new WeakMap(); // animation -> virtual ms its local time 0 is at
  const held = new WeakMap(); // animation -> local ms while the page holds it paused
  const readyPending = new Set();
  const AP = Animation.prototype;
  const realPause = AP.pause;
  const realPlay = AP.play;
  const currentTimeDesc = Object.getOwnPropertyDescriptor(AP, "currentTime");
  const realRateDesc = Object.getOwnPropertyDescriptor(AP, "playbackRate");
  const realUpdatePlaybackRate = AP.updatePlaybackRate;
  const realReverse = AP.reverse;
  // The page's playback rate (updatePlaybackRate, reverse, playbackRate writes) is virtual too: the real
  // animation keeps rate 1 and stays paused; a rate of 0 holds the local time where it is.
  const rates = new WeakMap(); // animation -> virtual playback rate
  const zeroHeld = new WeakSet();
  const rateOf = (animation) => (rates.has(animation) ? rates.get(animation) : realRateDesc.get.call(animation) || 1);
  const localTime = (animation) =>
    held.has(animation) ? held.get(animation) : (now - born.get(animation)) * rateOf(animation);
  const atStartOrEnd = (animation, local) => {
    const end = endOf(animation);
    return rateOf(animation) > 0 ? Number.isFinite(end) && local >= end - EPS : local <= EPS;
  };
  function endOf(animation) {
    try { return animation.effect ? animation.effect.getComputedTiming().endTime : 0; } catch (e) { return 0; }
  }
  AP.pause = function () {
    if (!born.has(this)) return realPause.call(this);
    if (!held.has(this)) held.set(this, localTime(this));
    return realPause.call(this);
  };
  AP.play = function () {
    if (!born.has(this)) return realPlay.call(this);
    resume(this, rewound(this, localTime(this)));
    return undefined;
  };
  // play() (and reverse()) at the end of the way the animation runs start it over from the other end.
  function rewound(animation, local) {
    const end = endOf(animation);
    if (rateOf(animation) > 0 && Number.isFinite(end) && local >= end) return 0;
    if (rateOf(animation) < 0 && local <= 0 && Number.isFinite(end)) return end;
    return local;
  }
  function resume(animation, local) {
    held.delete(animation);
    zeroHeld.delete(animation);
    setRate(animation, rateOf(animation), local);
  }
  function setRate(animation, rate, local) {
    rates.set(animation, rate);
    if (rate === 0) {
      if (!held.has(animation)) { held.set(animation, local); zeroHeld.add(animation); }
    } else {
      if (zeroHeld.has(animation)) { held.delete(animation); zeroHeld.delete(animation); }
      if (held.has(animation)) held.set(animation, local);
      else born.set(animation, now - local / rate);
    }
    rearm(animation, local);
  }
  AP.updatePlaybackRate = function (rate) {
    if (!born.has(this)) return realUpdatePlaybackRate.call(this, rate);
    setRate(this, Number(rate), localTime(this)); // the local time stays where it is: no jump
    return undefined;
  };
  Object.defineProperty(AP, "playbackRate", {
    configurable: true,
    get() { return born.has(this) ? rateOf(this) : realRateDesc.get.call(this); },
    set(value) {
      if (!born.has(this)) return realRateDesc.set.call(this, value);
      setRate(this, Number(value), localTime(this));
    },
  });
  AP.reverse = function () {
    if (!born.has(this)) return realReverse.call(this);
    const local = localTime(this);
    rates.set(this, -rateOf(this));
    resume(this, rewound(this, local));
    return undefined;
  };

  // Finishing happens in virtual time too: when an animation's local time reaches its end at a frame,
  // its `finish` event fires (onfinish and listeners) and its `finished` promise resolves, before that
  // frame's requestAnimationFrame callbacks, so chains started from them are stepped like any other.
  const finishedPromise = new WeakMap(); // animation -> {promise, resolve}
  const fired = new WeakSet();
  const realFinishedDesc = Object.getOwnPropertyDescriptor(AP, "finished");
  Object.defineProperty(AP, "finished", {
    configurable: true,
    get() {
      if (!born.has(this)) return realFinishedDesc.get.call(this);
      let entry = finishedPromise.get(this);
      if (!entry) {
        let resolve;
        const promise = new Promise((r) => { resolve = r; });
        entry = { promise, resolve };
        finishedPromise.set(this, entry);
        if (fired.has(this)) resolve(this);
      }
      return entry.promise;
    },
  });
  function rearm(animation, local) {
    if (!atStartOrEnd(animation, local)) {
      if (fired.has(animation)) finishedPromise.delete(animation);
      fired.delete(animation);
      tracked.add(animation);
    }
  }
  // CSS animation and transition events in virtual time. Chromium sends its own for paused, seeked
  // animations at whatever moment it next updates them (a frame late, twice, or not at all), so those are
  // held back at the window and ours are sent at the frame where the virtual time crosses the boundary.
  for (const type of ["animationstart", "animationiteration", "animationend",
                      "transitionrun", "transitionstart", "transitionend"]) {
    window.addEventListener(type, (event) => { if (event.isTrusted) event.stopImmediatePropagation(); }, true);
  }
  const cssTracked = new Set(); // CSS animations and transitions that have not ended
  const cssState = new WeakMap(); // → { started, iteration }
  const isCssAnimation = (a) => !!(window.CSSAnimation && a instanceof CSSAnimation);
  const isCssTransition = (a) => !!(window.CSSTransition && a instanceof CSSTransition);
  function cssEvent(animation, type, elapsedTime) {
    const target = animation.effect && animation.effect.target;
    if (!target) return;
    const event = isCssAnimation(animation)
      ? new AnimationEvent(type, { animationName: animation.animationName, elapsedTime, bubbles: true })
      : new TransitionEvent(type, { propertyName: animation.transitionProperty, elapsedTime, bubbles: true });
    try { target.dispatchEvent(event); } catch (error) { record((error && error.message) || String(error)); }
  }
  function dispatchCssProgress() {
    for (const animation of cssTracked) {
      if (held.has(animation) || !animation.effect || rateOf(animation) <= 0) continue;
      let state = cssState.get(animation);
      if (!state) {
        state = { started: false, iteration: 0 };
        cssState.set(animation, state);
        if (isCssTransition(animation)) cssEvent(animation, "transitionrun", 0);
      }
      const local = localTime(animation);
      const timing = animation.effect.getTiming();
      const delay = Number(timing.delay) || 0;
      const end = endOf(animation);
      const ended = Number.isFinite(end) && local >= end - EPS;
      if (ended) cssTracked.delete(animation); // its end event is the finish dispatch's
      if (local < delay) continue;
      if (!state.started) {
        state.started = true;
        cssEvent(animation, isCssAnimation(animation) ? "animationstart" : "transitionstart", 0);
      }
      const duration = Number(animation.effect.getComputedTiming().duration) || 0;
      if (!isCssAnimation(animation) || !(duration > 0) || ended) continue;
      const iteration = Math.floor((local - delay) / duration);
      if (iteration > state.iteration) {
        state.iteration = iteration;
        cssEvent(animation, "animationiteration", (iteration * duration) / 1000);
      }
    }
  }
  const tracked = new Set(); // managed animations that may still finish
  function dispatchFinishes() {
    for (const animation of tracked) {
      if (held.has(animation) || fired.has(animation)) continue;
      const end = endOf(animation);
      if (!Number.isFinite(end)) { tracked.delete(animation); continue; }
      if (rateOf(animation) !== 0 && atStartOrEnd(animation, localTime(animation))) { // endTime: 700.0000000000001
        fired.add(animation);
        tracked.delete(animation);
        const entry = finishedPromise.get(animation);
        if (entry) entry.resolve(animation);
        try {
          const at = rateOf(animation) > 0 ? end : 0; // a reversed animation finishes at its start
          animation.dispatchEvent(new AnimationPlaybackEvent("finish", { currentTime: at, timelineTime: now }));
          // Paused CSS animations and transitions never send their DOM end events: send them here.
          const target = animation.effect && animation.effect.target;
          const elapsedTime = animation.effect ? animation.effect.getComputedTiming().activeDuration / 1000 : 0;
          if (target && window.CSSAnimation && animation instanceof CSSAnimation) {
            target.dispatchEvent(new AnimationEvent("animationend",
              { animationName: animation.animationName, elapsedTime, bubbles: true }));
          } else if (target && window.CSSTransition && animation instanceof CSSTransition) {
            target.dispatchEvent(new TransitionEvent("transitionend",
              { propertyName: animation.transitionProperty, elapsedTime, bubbles: true }));
          }
        } catch (error) {
          record((error && error.message) || String(error));
        }
      }
    }
  }
  Object.defineProperty(AP, "currentTime", {
    configurable: true,
    get() { return currentTimeDesc.get.call(this); },
    set(value) {
      if (born.has(this) && value !== null && !internalWrite) {
        if (held.has(this)) held.set(this, Number(value));
        else born.set(this, now - Number(value) / rateOf(this));
        rearm(this, Number(value));
      }
      currentTimeDesc.set.call(this, value);
    },
  });
  let internalWrite = false;
  function setLocal(animation, value) {
    internalWrite = true;
    try { animation.currentTime = value; } finally { internalWrite = false; }
  }
  Element.prototype.animate = function (...args) {
    const animation = realAnimate.apply(this, args);
    adopt(animation, now);
    return animation;
  };
  function adopt(animation, t0) {
    if (born.has(animation)) return;
    // A Helios instance that syncs animations itself (autoSyncAnimations) sets every animation's time to the
    // composition's time, as Helios's player does: local time = now, whenever the animation was created.
    if (autoSyncsAnimations()) t0 = now - now / rateOf(animation);
    born.set(animation, t0);
    tracked.add(animation);
    if (isCssAnimation(animation) || isCssTransition(animation)) cssTracked.add(animation);
    try { realPause.call(animation); } catch (e) { /* ignore */ }
    readyPending.add(animation);
  }
  function collectAnimations() {
    // getAnimations() flushes style, so CSS animations/transitions started by the last callback exist now.
    const list = document.getAnimations ? document.getAnimations() : [];
    for (const animation of list) adopt(animation, now);
    return list;
  }
  async function settleAnimations() {
    if (readyPending.size === 0) return;
    const pending = [...readyPending];
    readyPending.clear();
    // A pending pause completes on the next animation frame and would overwrite a seek made before it.
    await Promise.all(pending.map((a) => a.ready.catch(() => null)));
  }
  async function seekAnimations(list) {
    // The page may have played an animation again (play(), reverse(), finish()...): pause it and wait for
    // the pause to apply before seeking, or the pending pause would overwrite the seek.
    const replayed = list.filter((a) => born.has(a) && a.playState !== "paused");
    if (replayed.length) {
      for (const animation of replayed) { try { realPause.call(animation); } catch (e) { /* ignore */ } }
      await Promise.all(replayed.map((a) => a.ready.catch(() => null)));
    }
    for (const animation of list) {
      if (!born.has(animation)) continue;
      let local = localTime(animation);
      const end = endOf(animation);
      if (Number.isFinite(end)) local = Math.min(Math.max(local, 0), end); // as a finished animation reads
      try { setLocal(animation, local); } catch (e) { /* detached */ }
    }
  }

  // WebGL canvases keep their drawing buffer so the canvas capture can read them after compositing.
  HTMLCanvasElement.prototype.getContext = function (type, attributes) {
    const webgl = type === "webgl" || type === "webgl2" || type === "experimental-webgl";
    const pagePreserves = !!(attributes && attributes.preserveDrawingBuffer);
    if (webgl) attributes = Object.assign({}, attributes || {}, { preserveDrawingBuffer: true });
    const context = realGetContext.call(this, type, attributes);
    if (context && !this.__heliosContextType) this.__heliosContextType = type;
    if (context && webgl && context.__heliosPagePreserves === undefined) context.__heliosPagePreserves = pagePreserves;
    return context;
  };

  // Fast-forward skips WebGL draws into the default framebuffer of contexts that did not ask for
  // preserveDrawingBuffer: the page expects that buffer cleared after every frame, so those pixels can
  // never reach a later frame. Draws into framebuffer objects (render targets, simulations) still run.
  let skipDraws = false;
  function patchWebGL(proto) {
    if (!proto) return;
    const bind = proto.bindFramebuffer;
    proto.bindFramebuffer = function (target, framebuffer) {
      if (target !== this.READ_FRAMEBUFFER) this.__heliosDrawFbo = framebuffer;
      return bind.call(this, target, framebuffer);
    };
    for (const name of ["drawArrays", "drawElements", "drawArraysInstanced", "drawElementsInstanced",
      "drawRangeElements", "clear", "multiDrawArraysWEBGL", "multiDrawElementsWEBGL"]) {
      const real = proto[name];
      if (typeof real !== "function") continue;
      proto[name] = function (...args) {
        if (skipDraws && !this.__heliosDrawFbo && this.__heliosPagePreserves === false) return undefined;
        return real.apply(this, args);
      };
    }
  }
  // 2D canvases keep their pixels between frames, so their drawing is only skipped when the composition
  // says every frame repaints the whole canvas from the time alone: window.helios.statelessCanvas = true.
  function patch2D(proto) {
    if (!proto) return;
    for (const name of ["fill", "stroke", "fillRect", "strokeRect", "clearRect", "fillText", "strokeText",
      "drawImage", "putImageData", "drawFocusIfNeeded", "clip", "beginPath", "closePath", "moveTo", "lineTo",
      "arc", "arcTo", "ellipse", "rect", "roundRect", "bezierCurveTo", "quadraticCurveTo"]) {
      const real = proto[name];
      if (typeof real !== "function") continue;
      proto[name] = function (...args) {
        if (skipDraws && statelessCanvas()) return undefined;
        return real.apply(this, args);
      };
    }
  }
  patch2D(window.CanvasRenderingContext2D && CanvasRenderingContext2D.prototype);
  patch2D(window.OffscreenCanvasRenderingContext2D && OffscreenCanvasRenderingContext2D.prototype);
  patchWebGL(window.WebGLRenderingContext && WebGLRenderingContext.prototype);
  patchWebGL(window.WebGL2RenderingContext && WebGL2RenderingContext.prototype);

  // ---- window.helios: the composition's API --------------------------------------------------------
  const holds = new Map();
  let holdId = 1;
  const READ_ONLY = new Set(["version", "fps", "frame", "time", "delayRender", "continueRender"]);
  const api = {
    version: 1,
    fps: FPS,
    get frame() { return currentFrame; },
    get time() { return now / 1000; },
    get props() { return PROPS; },
    seek: null,
    delayRender(label) {
      const id = holdId++;
      holds.set(id, { label: label ? String(label) : "delayRender #" + id, frame: currentFrame });
      return id;
    },
    continueRender(handle) { holds.delete(handle); },
  };
  // The page's own window.helios when it assigns an object of a class (a @helios-project/core Helios):
  // window.helios then returns that very object, driven as the original seek driver drives it, and lent
  // the members of our API it does not have itself (delayRender, continueRender, statelessCanvas, ...).
  let instance = null;
  function lendApi(target) {
    const lent = {
      delayRender: { value: api.delayRender },
      continueRender: { value: api.continueRender },
      statelessCanvas: { get: () => api.statelessCanvas, set: (v) => { api.statelessCanvas = v; } },
      frame: { get: () => currentFrame },
      time: { get: () => now / 1000 },
      props: { get: () => PROPS },
    };
    for (const [key, descriptor] of Object.entries(lent)) {
      if (key in target) continue;
      try { Object.defineProperty(target, key, Object.assign({ configurable: true, enumerable: false }, descriptor)); }
      catch (e) { /* frozen object: it keeps only its own members */ }
    }
  }
  // statelessCanvas as the page set it: on our API (lent to an instance), or the instance's own member.
  function statelessCanvas() {
    const own = instance && Object.prototype.hasOwnProperty.call(instance, "statelessCanvas") &&
      !Object.getOwnPropertyDescriptor(instance, "statelessCanvas").get;
    return (own ? instance.statelessCanvas : api.statelessCanvas) === true;
  }
  function isPlainObject(value) {
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  }
  Object.defineProperty(window, "helios", {
    configurable: false,
    enumerable: true,
    get() { return instance || api; },
    set(value) {
      if (value && typeof value === "object" && isPlainObject(value)) {
        // A composition may assign `window.helios = {seek}`: keep our object, take its hooks.
        instance = null;
        for (const key of Object.keys(value)) {
          if (!READ_ONLY.has(key)) api[key] = value[key];
        }
      } else if (value && (typeof value === "object" || typeof value === "function")) {
        instance = value;
        lendApi(value);
      } else if (value == null) {
        instance = null;
      }
    },
  });
  // A @helios-project/core Helios: seek(frame), subscribe(), an fps signal.
  function coreInstance() {
    const h = instance;
    return h && typeof h.seek === "function" && typeof h.subscribe === "function" && h.fps &&
      typeof h.fps === "object" && "value" in h.fps ? h : null;
  }
  function autoSyncsAnimations() {
    const h = coreInstance();
    return !!(h && h.autoSyncAnimations === true);
  }
  // The instance's frame at a render frame: the same integer when the fps agree (they do unless flags
  // override the instance's fps); otherwise the instance's exact (maybe fractional) frame at that time.
  function instanceFps(h) {
    const fps = Number(h.fps.value);
    return Number.isFinite(fps) && fps > 0 ? fps : FPS;
  }
  function instanceFrame(h, frame) {
    const fps = instanceFps(h);
    if (fps === FPS) return frame;
    const exact = (frame * fps) / FPS;
    const whole = Math.round(exact);
    return Math.abs(exact - whole) < 1e-6 ? whole : exact;
  }
  // The frame's milliseconds, nudged by at most a few ulps so that an instance bound to the document
  // timeline, which derives its frame as (ms / 1000) * fps, gets the integer frame (13, not 12.999999999999998).
  const f64 = new Float64Array(1);
  const i64 = new BigInt64Array(f64.buffer);
  function ulpStep(value, delta) {
    f64[0] = value;
    i64[0] += BigInt(delta);
    return f64[0];
  }
  function virtualTimeMs(frame) {
    const ms = (frame * 1000) / FPS;
    if (ms <= 0) return ms;
    // Without window.helios, a bound instance may still listen (it need not be exposed): assume the render fps.
    const h = coreInstance();
    const fps = h ? instanceFps(h) : FPS;
    const wanted = h ? instanceFrame(h, frame) : frame;
    if (!Number.isInteger(wanted) || (ms / 1000) * fps === wanted) return ms;
    for (let k = 1; k <= 16; k++) {
      for (const candidate of [ulpStep(ms, k), ulpStep(ms, -k)]) {
        if ((candidate / 1000) * fps === wanted) return candidate;
      }
    }
    // No double gives the frame exactly (31 at 30 fps, ~4% of frames): take the nearest one just above it,
    // so a composition that truncates sees n (not n - 1) until helios.seek(n) sets the integer.
    for (let k = 1; k <= 16; k++) {
      const candidate = ulpStep(ms, k);
      if ((candidate / 1000) * fps >= wanted) return candidate;
    }
    return ms;
  }
  function setVirtualTime(frame) {
    try { window.__HELIOS_VIRTUAL_TIME__ = virtualTimeMs(frame); }
    catch (error) { record((error && error.message) || String(error)); }
  }

  function sleepReal(ms) { return new Promise((resolve) => realSetTimeout(resolve, ms)); }
  async function waitHolds(frame, deadline) {
    while (holds.size > 0) {
      if (RealDate.now() > deadline) {
        const labels = [...holds.values()].map((h) => h.label).join(", ");
        throw new Error("timeout: frame " + frame + " never became ready (" + labels + " still pending)");
      }
      await sleepReal(5);
    }
  }
  async function withTimeout(promise, frame, deadline, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = realSetTimeout(
        () => reject(new Error("timeout: frame " + frame + " never became ready (" + what + ")")),
        Math.max(0, deadline - RealDate.now()));
    });
    try { return await Promise.race([promise, timeout]); } finally { realClearTimeout(timer); }
  }

  // ---- media ---------------------------------------------------------------------------------------
  // Every step notes when each <video> appeared (fast-forward included), so its time is the same in every
  // chunk; only captured frames pay for the seek.
  const mediaBorn = new WeakMap(); // media element -> virtual ms it was first seen at
  const mediaSeen = [];             // every media element seen, in order (for the audio discovery)
  const mediaRate = new WeakMap();  // playbackRate as first seen (the core's DomDriver resets the property)
  // A seek's picture counts as presented when requestVideoFrameCallback reports a presentation made after
  // the seek whose mediaTime is the target's frame: at most this far before the target (or any frame on
  // the seek's side of the previous picture, for videos with sparser frames).
  const VIDEO_FRAME_WINDOW_S = 0.25;
  const VIDEO_MEDIA_EPS_S = 0.002;
  // Captured pictures are checked at up to GRID x GRID points of each seeked video (see videoProbe): a
  // stale picture that differs from the target's only between those points is not seen.
  const VIDEO_PROBE_GRID = 16;
  // A point tells the two pictures apart when their colours differ by more than this (sum over RGB).
  const VIDEO_PROBE_CONTRAST = 60;
  // A captured point shows a picture when its colour is within this of it (JPEG and scaling noise).
  const VIDEO_PROBE_MATCH = 45;
  // A first picture (nothing of the video shown before) is missing when more than a quarter of its points
  // do not show it; a later one is stale when most points show the previous picture.
  const VIDEO_FIRST_PICTURE_SHARE = 4;
  const videoSynced = new WeakSet(); // videos seeked (and presented) at least once
  // Videos whose picture a checked capture has shown. Until then the screen holds no picture of theirs
  // (a video hidden by a clip or off-screen until now has never had its surface drawn: a chunk whose
  // first frames keep it hidden reveals it later, and the reveal can be captured before its first
  // submission), so the capture must show the target's picture itself, not merely not the previous one.
  const videoOnScreen = new WeakSet();
  // Media are found as the original renderer's scanner finds them: in the document, in shadow roots
  // (every one attachShadow made, open or closed, and declarative ones) and in same-origin iframes.
  const shadowRoots = new Set();
  const realAttachShadow = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (...args) {
    const root = realAttachShadow.apply(this, args);
    shadowRoots.add(root);
    return root;
  };
  function noteDeclarativeShadowRoots() {
    for (const el of allElements(document)) if (el.shadowRoot) shadowRoots.add(el.shadowRoot);
  }
  function mediaScopes() {
    const scopes = [document];
    for (const root of shadowRoots) if (root.host && root.host.isConnected) scopes.push(root);
    for (const frame of document.querySelectorAll("iframe")) {
      // A same-origin iframe with its own shim is stepped (and syncs its media) itself: see stepChildFrames.
      if (childShim(frame)) continue;
      try { if (frame.contentDocument) scopes.push(frame.contentDocument); } catch (e) { /* cross-origin */ }
    }
    return scopes;
  }
  function findMedia() {
    const found = [];
    for (const scope of mediaScopes()) {
      for (const el of scope.querySelectorAll("audio, video")) found.push(el);
    }
    return found;
  }
  function readRate(el) {
    let rate = Number(el.playbackRate);
    if (rate === 1) {
      const attr = parseFloat(el.getAttribute("playbackRate"));
      if (!Number.isNaN(attr)) rate = attr;
    }
    return Number.isFinite(rate) && rate > 0 ? rate : 1;
  }
  function noteMedia() {
    const media = findMedia();
    for (const el of media) {
      if (!mediaBorn.has(el)) {
        mediaBorn.set(el, now);
        mediaSeen.push(el);
        mediaRate.set(el, readRate(el));
        // Real-time playback (autoplay, or play() from the page) must never move the picture.
        el.autoplay = false;
        el.addEventListener("playing", () => el.pause());
        el.addEventListener("play", () => el.pause());
      }
      try { if (!el.paused) el.pause(); } catch (e) { /* ignore */ }
    }
    return media;
  }
  const seconds = (el, name) => {
    const value = parseFloat(el.getAttribute(name));
    return Number.isFinite(value) ? value : 0;
  };
  // Where a media element's playhead is at the current time: max(0, (t - offset) x rate + seek), as the
  // original renderer places it. t is the composition's time when the page drives a Helios instance or
  // the element names an offset or seek; otherwise the time since the element appeared.
  function mediaTarget(el) {
    const composition = coreInstance() !== null || el.hasAttribute("data-helios-offset") || el.hasAttribute("data-helios-seek");
    const base = (composition ? now : now - mediaBorn.get(el)) / 1000;
    const rate = mediaRate.get(el) || 1;
    return Math.max(0, (base - seconds(el, "data-helios-offset")) * rate + seconds(el, "data-helios-seek"));
  }
  // ---- <video> pictures --------------------------------------------------------------------------
  // requestVideoFrameCallback fires when a new picture becomes the video's current frame (drawImage reads
  // that same frame); every completed seek presents exactly one, even onto the frame already shown. It
  // does not say the picture has reached the display: Chromium submits a video's pictures to the display
  // compositor on their own surface, asynchronously and possibly a frame late (an unacknowledged previous
  // submission defers the next), so a screenshot can still show the previous picture. Hence two parts:
  // the step waits (without a real-time cap) until the target's picture is the current frame, and the
  // capture checks the captured image against it (checkVideoShot) and captures again while it is stale.
  // Presentations are watched only while a seek waits for its picture: a standing callback request keeps
  // the video's compositor sink on every BeginFrame, which stalled new-headless Chromium under load.
  const videoShown = new WeakMap(); // video -> mediaTime of its last picture seen presented
  function watchPresentations(video) {
    const state = { count: 0, mediaTime: videoShown.has(video) ? videoShown.get(video) : 0, waiters: [], handle: 0 };
    const onFrame = (_, meta) => {
      if (state.stopped) return;
      state.count++;
      state.mediaTime = meta.mediaTime;
      videoShown.set(video, meta.mediaTime);
      for (const wake of state.waiters.splice(0)) wake();
      state.handle = video.requestVideoFrameCallback(onFrame);
    };
    state.handle = video.requestVideoFrameCallback(onFrame);
    state.stop = () => { state.stopped = true; video.cancelVideoFrameCallback(state.handle); };
    return state;
  }
  function isTargetPicture(state, before, target) {
    if (state.count <= before.count) return false; // nothing presented since the seek began
    const m = state.mediaTime;
    if (m <= target + VIDEO_MEDIA_EPS_S && target - m < VIDEO_FRAME_WINDOW_S) return true;
    // The picture shown before, presented again: a seek within one (sparse) frame. Only when that picture
    // is known (seen presented by an earlier sync); a first sync starts from a guess of 0.
    if (before.known && Math.abs(m - before.mediaTime) <= 1e-6) return true;
    // A first sync onto a time before the video's first picture (its first timestamp is past the target):
    // the picture just after the target is the one that shows.
    if (!before.known && m > target && m - target < VIDEO_FRAME_WINDOW_S) return true;
    // Sparse frames: a picture on the seek's side of the previous one (never a late previous picture).
    return target > before.mediaTime ? m > before.mediaTime + 1e-6 && m <= target + VIDEO_MEDIA_EPS_S
      : m < before.mediaTime - 1e-6;
  }
  async function untilPresented(video, state, before, target) {
    while (!isTargetPicture(state, before, target)) {
      if (video.error) return; // a decode that failed presents nothing (the element keeps no picture)
      // Woken by the presentation; the short real timer only re-checks (seekVideos' deadline bounds it).
      await new Promise((wake) => { state.waiters.push(wake); realSetTimeout(wake, 20); });
    }
  }
  // Chromium elides a seek to the time a paused, loaded player already shows (WebMediaPlayerImpl::DoSeek:
  // paused, pipeline stable, target == its paused time, ready state HAVE_ENOUGH_DATA, not MSE): it only
  // restores the ready state, decodes and presents nothing, and requestVideoFrameCallback then fires only
  // for a callback that has not yet seen the current picture (none if the page's own callback has). So
  // such a seek is not waited for: the element keeps the picture it holds, which is the target's, and the
  // captured image is checked as after any seek. (For an MSE video, never elided, the same holds: the
  // picture at the unchanged time is the one it holds.)
  function seekIsElided(video, target) {
    return video.paused && !video.seeking && video.readyState === 4 && Math.abs(video.currentTime - target) < 1e-6;
  }
  // Whether the element holds a decoded picture: drawImage draws nothing (alpha 0) before its first one,
  // although readyState can already say HAVE_ENOUGH_DATA. A cross-origin video cannot be read: true.
  function holdsPicture(video) {
    try {
      if (!probeCanvas) probeCanvas = document.createElement("canvas");
      probeCanvas.width = 1;
      probeCanvas.height = 1;
      const context = probeCanvas.getContext("2d", { willReadFrequently: true });
      context.clearRect(0, 0, 1, 1);
      context.drawImage(video, Math.floor(video.videoWidth / 2), Math.floor(video.videoHeight / 2), 1, 1, 0, 0, 1, 1);
      return context.getImageData(0, 0, 1, 1).data[3] > 0;
    } catch (error) {
      return true;
    }
  }
  async function syncVideo(video, target) {
    if (!hasSource(video)) return false; // nothing to show (the audio discovery warns about it)
    if (video.preload !== "auto") video.preload = "auto";
    while (video.readyState < 1) {                     // HAVE_METADATA: duration known, seekable
      if (video.error || (video.networkState === 3 && !video.currentSrc)) return false;
      await sleepReal(2);
    }
    const duration = video.duration;
    if (Number.isFinite(duration) && duration > 0) {
      target = video.loop ? target % duration : Math.min(target, Math.max(0, duration - 1e-3));
    }
    const first = !videoSynced.has(video);
    videoSynced.add(video);
    if (!first && Math.abs(video.currentTime - target) <= 1e-4 && video.readyState >= 2 && !video.seeking) {
      // Not moved. A picture no checked capture has shown yet (the video was hidden until now) is still
      // checked: the capture must show it.
      if (!videoOnScreen.has(video)) {
        const probe = videoProbe(video, true);
        if (probe) finishProbe(video, probe);
      }
      return false;
    }
    const probe = videoProbe(video, first);
    const elided = seekIsElided(video, target);
    const state = !elided && typeof video.requestVideoFrameCallback === "function" ? watchPresentations(video) : null;
    const before = state ? { count: 0, mediaTime: state.mediaTime, known: videoShown.has(video) } : null;
    try {
      video.currentTime = target;
      while (video.seeking || video.readyState < 2) {   // HAVE_CURRENT_DATA: this frame is decoded
        if (video.error) return false;
        await sleepReal(2);
      }
      if (video.videoWidth > 0) {
        if (state) await untilPresented(video, state, before, target);
        // An elided seek presents nothing: its picture is the one the element holds, once it holds one
        // (a video's first picture can still be on its way to the compositor at HAVE_ENOUGH_DATA).
        else while (elided && !holdsPicture(video)) {
          if (video.error) return false;
          await sleepReal(2);
        }
      }
    } finally {
      if (state) state.stop();
    }
    if (probe) finishProbe(video, probe);
    return true;
  }
  async function seekVideos(frame, deadline) {
    const media = noteMedia();
    videoProbes = [];
    videoUnchecked = null;
    const waits = [];
    for (const video of media) {
      if (video.tagName !== "VIDEO" || video.hasAttribute("data-helios-manual")) continue;
      waits.push(syncVideo(video, mediaTarget(video)));
    }
    if (!waits.length) return 0;
    const moved = await withTimeout(Promise.all(waits), frame, deadline, "<video> picture not presented");
    return moved.filter(Boolean).length;
  }

  // ---- checking a captured image for stale <video> pictures ----------------------------------------
  // Before a seek, a probe picks points of the viewport where the video is the topmost element, and reads
  // the previous picture there (drawImage of the video's current frame); after the presentation, the
  // target's picture; only points where the two differ are kept. A captured image is stale when at most of
  // those points it shows the previous picture (closer to it than to the target's, and close to it). Only
  // videos whose colours reach the screen unchanged (no opacity, filter or blending on the way) are probed;
  // a translucent overlay makes points match neither picture, so they never vote stale. A video's first
  // picture (nothing shown before) is checked positively: most points must show it.
  let videoProbes = [];
  let probeCanvas = null;
  // Points map to video pixels through layout and axis-aligned transforms only (no rotation, skew, 3D).
  function axisAligned(el) {
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const transform = getComputedStyle(node).transform;
      if (transform === "none") continue;
      const m = /^matrix\(([^)]*)\)$/.exec(transform);
      if (!m) return false;
      const [, b, c] = m[1].split(",").map(Number);
      if (b !== 0 || c !== 0) return false;
    }
    return true;
  }
  function pictureRect(video) {
    const box = video.getBoundingClientRect();
    const style = getComputedStyle(video);
    const vw = video.videoWidth, vh = video.videoHeight;
    const lw = video.clientWidth, lh = video.clientHeight; // layout size (before transforms)
    if (!vw || !vh || lw < 4 || lh < 4 || box.width < 4 || box.height < 4) return null;
    if (style.objectPosition !== "50% 50%" || parseFloat(style.borderLeftWidth) || parseFloat(style.paddingLeft) ||
        parseFloat(style.borderTopWidth) || parseFloat(style.paddingTop)) return null;
    let width = lw, height = lh;
    const fit = style.objectFit;
    if (fit === "contain" || fit === "cover" || fit === "none" || fit === "scale-down") {
      let scale = fit === "none" ? 1 : (fit === "cover" ? Math.max : Math.min)(lw / vw, lh / vh);
      if (fit === "scale-down") scale = Math.min(1, scale);
      width = vw * scale;
      height = vh * scale;
    }
    width *= box.width / lw;
    height *= box.height / lh;
    return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2, width, height, vw, vh };
  }
  // Nothing between the video and the screen changes its colours (for a first picture, checked as such).
  function plainColours(el) {
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (Number(style.opacity) !== 1 || style.filter !== "none" || style.mixBlendMode !== "normal") return false;
    }
    return true;
  }
  // Hit tests see every element, also those with pointer-events: none (an overlay the page made click-through
  // still covers the video); a constructed sheet, so the page's own DOM and observers see no change.
  let hitSheet = null;
  function hitTestAll(fn, root = document) {
    if (!hitSheet) {
      hitSheet = new CSSStyleSheet();
      hitSheet.replaceSync("* { pointer-events: auto !important; }");
    }
    const scopes = root instanceof ShadowRoot ? [document, root] : [document];
    const sheets = scopes.map((scope) => scope.adoptedStyleSheets);
    scopes.forEach((scope, k) => { scope.adoptedStyleSheets = [...sheets[k], hitSheet]; });
    try { return fn(); } finally { scopes.forEach((scope, k) => { scope.adoptedStyleSheets = sheets[k]; }); }
  }
  // Why a <video> on screen at this captured frame cannot be checked (the first reason seen), or null.
  // Begin-frame capture renders such a page again with Page.captureScreenshot (capture.UncheckedVideo):
  // it draws only when asked, and a picture nothing checks could be captured before it arrives.
  let videoUnchecked = null;
  function uncheckable(reason) {
    videoUnchecked = videoUnchecked || reason;
    return null;
  }
  function videoProbe(video, first) {
    // No picture on screen yet (a video just added, or its first sync): the captured image must show the
    // target's picture itself. The element may hold decoded data already (readyState >= 2), but what it
    // holds is not what the screen shows until its surface has been submitted once.
    const fresh = first || video.readyState < 2 || !videoOnScreen.has(video);
    const root = video.getRootNode();
    const rect = pictureRect(video);
    const box = video.getBoundingClientRect();
    const area = rect || { left: box.left, top: box.top, width: box.width, height: box.height, vw: 1, vh: 1 };
    const points = hitTestAll(() => probePoints(video, area, root), root);
    if (!points.length) return null; // nothing of it on screen
    if (!rect) return uncheckable("placed by object-position, a border or padding");
    if (root !== document) return uncheckable(root instanceof ShadowRoot ? "in a shadow root" : "in an iframe");
    if (window !== window.top) return uncheckable("in an iframe"); // the top page's capture checks its own
    if (!axisAligned(video)) return uncheckable("rotated, skewed or in 3D");
    // Only where the video's colours reach the screen unchanged: behind opacity or a filter a captured
    // point could match the previous picture by chance (a video fading in over black) and never pass.
    if (!plainColours(video)) return uncheckable("behind opacity, a filter or a blend mode");
    const old = fresh ? null : readVideo(video, points);
    if (!fresh && !old) return uncheckable("cross-origin");
    return { video, points, old, rect };
  }
  function probePoints(video, rect, root = document) {
    const points = [];
    for (let i = 0; i < VIDEO_PROBE_GRID; i++) {
      for (let j = 0; j < VIDEO_PROBE_GRID; j++) {
        const x = Math.floor(rect.left + ((i + 0.5) * rect.width) / VIDEO_PROBE_GRID) + 0.5;
        const y = Math.floor(rect.top + ((j + 0.5) * rect.height) / VIDEO_PROBE_GRID) + 0.5;
        if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) continue;
        if (root.elementFromPoint(x, y) !== video) continue;
        points.push([x, y, ((x - rect.left) * rect.vw) / rect.width, ((y - rect.top) * rect.vh) / rect.height]);
      }
    }
    return points;
  }
  function readVideo(video, points) {
    try {
      if (!probeCanvas) probeCanvas = document.createElement("canvas");
      probeCanvas.width = points.length;
      probeCanvas.height = 1;
      const context = probeCanvas.getContext("2d", { willReadFrequently: true });
      points.forEach(([, , sx, sy], k) => context.drawImage(video, Math.floor(sx), Math.floor(sy), 1, 1, k, 0, 1, 1));
      return Array.from(context.getImageData(0, 0, points.length, 1).data);
    } catch (error) {
      return null; // a cross-origin video cannot be read: no check
    }
  }
  // The video's current picture at `points` as the screen shows it: drawn at its on-screen size, so a
  // scaled picture is compared filtered as the compositor filters it (a point read from one source pixel
  // of a detailed picture shown smaller can differ from the screen by more than the match distance).
  let shownCanvas = null;
  function readVideoAsShown(video, points, rect) {
    try {
      const width = Math.max(1, Math.round(rect.width));
      const height = Math.max(1, Math.round(rect.height));
      if (!shownCanvas) shownCanvas = document.createElement("canvas");
      shownCanvas.width = width;
      shownCanvas.height = height;
      const context = shownCanvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(video, 0, 0, rect.vw, rect.vh, 0, 0, width, height);
      const data = context.getImageData(0, 0, width, height).data;
      const clamp = (value, size) => Math.min(size - 1, Math.max(0, Math.floor(value)));
      const out = [];
      for (const [x, y] of points) {
        const k = clamp(y - rect.top, height) * width + clamp(x - rect.left, width);
        out.push(data[4 * k], data[4 * k + 1], data[4 * k + 2], data[4 * k + 3]);
      }
      return out;
    } catch (error) {
      return null; // a cross-origin video cannot be read: no check
    }
  }
  const pixel = (data, k) => [data[4 * k], data[4 * k + 1], data[4 * k + 2]];
  const distance = (a, b) => Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) + Math.abs(a[2] - b[2]);
  function finishProbe(video, probe) {
    const now = probe.old ? readVideo(video, probe.points) : readVideoAsShown(video, probe.points, probe.rect);
    if (!now) return;
    if (!probe.old) {
      videoProbes.push({ video, points: probe.points, old: null, now: probe.points.map((_, k) => pixel(now, k)) });
      return;
    }
    const kept = { video, points: [], old: [], now: [] };
    probe.points.forEach((point, k) => {
      const [a, b] = [pixel(probe.old, k), pixel(now, k)];
      if (distance(a, b) <= VIDEO_PROBE_CONTRAST) return; // this point cannot tell the pictures apart
      kept.points.push(point);
      kept.old.push(a);
      kept.now.push(b);
    });
    if (kept.points.length) videoProbes.push(kept);
  }
  // Whether the captured image (base64 of `mime`) shows every probed video's target picture: at most of a
  // probe's points it must be closer to the target's picture than to the previous one; a first picture
  // must show at three quarters of them or more.
  async function checkVideoShot(data, mime) {
    if (!videoProbes.length) return { ok: true };
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: mime }));
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const image = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let stale = 0;
    for (const probe of videoProbes) {
      let old = 0;
      probe.points.forEach(([x, y], k) => {
        const shot = pixel(image, Math.floor(y) * canvas.width + Math.floor(x));
        const toNow = distance(shot, probe.now[k]);
        if (!probe.old) old += toNow > VIDEO_PROBE_MATCH ? 1 : 0; // a first picture: not shown yet
        else if (distance(shot, probe.old[k]) <= VIDEO_PROBE_MATCH && distance(shot, probe.old[k]) < toNow) old++;
      });
      // A first picture must show at nearly every point (read as shown, it matched 238-239 of 239 in the
      // timeline example); a capture without it can still match where the picture has the colour of
      // what lies under it (the dark half of a picture over a black page).
      if ((probe.old ? 2 : VIDEO_FIRST_PICTURE_SHARE) * old > probe.points.length) stale++;
    }
    if (stale === 0) for (const probe of videoProbes) videoOnScreen.add(probe.video);
    return { ok: stale === 0, stale };
  }

  // Fonts and images that started loading after the first frame (text or <img> added later) are ready
  // before the frame that shows them is captured.
  async function awaitAssets(frame, deadline) {
    if (document.fonts && document.fonts.status === "loading") {
      await withTimeout(document.fonts.ready, frame, deadline, "document.fonts.ready");
    }
    const pending = [];
    for (const img of document.images) {
      if (img.src && !img.complete) pending.push(img.decode().catch(() => null));
    }
    if (pending.length) await withTimeout(Promise.all(pending), frame, deadline, "image decode");
  }

  // Every element of a document, shadow roots included.
  function* allElements(root) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT);
    while (walker.nextNode()) {
      const node = walker.currentNode;
      yield node;
      if (node.shadowRoot) yield* allElements(node.shadowRoot);
    }
  }
  // Pictures a page shows without an <img>: video posters, SVG <image>, CSS background and mask images.
  function pictureUrls() {
    const urls = new Set();
    const add = (url) => { if (url && !url.startsWith("data:")) urls.add(new URL(url, document.baseURI).href); };
    for (const el of allElements(document)) {
      if (el.tagName === "VIDEO" && el.poster) add(el.poster);
      if (el instanceof SVGImageElement) add(el.getAttribute("href") || el.getAttribute("xlink:href"));
      const style = getComputedStyle(el);
      for (const value of [style.backgroundImage, style.maskImage, style.webkitMaskImage]) {
        if (!value || value === "none") continue;
        for (const match of value.matchAll(/url\(\s*(["']?)(.*?)\1\s*\)/g)) add(match[2]);
      }
    }
    return [...urls];
  }
  function loadPicture(url) {
    const img = new Image();
    img.src = url;
    return img.decode().catch(() => null);
  }
  // Until no request is in flight and what they started has run (checked over a few macrotasks).
  async function networkIdle(deadline) {
    for (let quiet = 0; quiet < 3;) {
      if (pendingRequests.size > 0) {
        quiet = 0;
        if (RealDate.now() > deadline) {
          throw new Error("timeout: frame 0 never became ready (requests still loading: " +
            [...pendingRequests.values()].slice(0, 3).join(", ") + ")");
        }
        await sleepReal(2);
      } else {
        quiet++;
        await macrotask();
      }
    }
  }
  async function prepare() {
    const deadline = RealDate.now() + CONFIG.timeoutMs;
    await networkIdle(deadline);
    if (document.fonts && document.fonts.ready) await withTimeout(document.fonts.ready, 0, deadline, "document.fonts.ready");
    const images = [...document.images].filter((img) => img.src);
    await withTimeout(Promise.all(images.map((img) => img.decode().catch(() => null))), 0, deadline, "image decode");
    await withTimeout(Promise.all(pictureUrls().map(loadPicture)), 0, deadline,
      "posters, SVG images, CSS background and mask images");
    noteDeclarativeShadowRoots();
    return errors.slice();
  }
  // The gain a Helios instance applies to a media element: its master volume/muted and its track's.
  function mixOf(h, trackId) {
    const value = (signal) => (signal && typeof signal === "object" && "value" in signal ? signal.value : undefined);
    if (!h) return { volume: 1, muted: false };
    const master = Number(value(h.volume));
    const tracks = value(h.audioTracks) || {};
    const track = trackId && tracks[trackId] ? tracks[trackId] : {};
    const trackVolume = Number(track.volume);
    return {
      volume: (Number.isFinite(master) ? master : 1) * (Number.isFinite(trackVolume) ? trackVolume : 1),
      muted: value(h.muted) === true || track.muted === true,
    };
  }
  // Every media element the page has shown so far, as the audio mix needs it.
  function describeMedia() {
    const children = [];
    for (const iframe of document.querySelectorAll("iframe")) {
      const child = childShim(iframe);
      if (child) children.push(...child.describeMedia());
    }
    return describeOwnMedia().concat(children);
  }
  function describeOwnMedia() {
    const h = coreInstance();
    const states = h && h.driver && h.driver.trackStates instanceof WeakMap ? h.driver.trackStates : null;
    return mediaSeen.map((el) => {
      const state = states ? states.get(el) : undefined;
      const source = el.querySelector("source[src]");
      const attr = (name) => el.getAttribute(name);
      return {
        tag: el.tagName.toLowerCase(),
        src: el.currentSrc || el.src || (source ? source.src : ""),
        bornS: mediaBorn.get(el) / 1000,
        composition: h !== null || el.hasAttribute("data-helios-offset") || el.hasAttribute("data-helios-seek"),
        helios: h !== null,
        offset: seconds(el, "data-helios-offset"),
        seek: seconds(el, "data-helios-seek"),
        rate: mediaRate.get(el) || 1,
        loop: el.loop,
        fadeIn: seconds(el, "data-helios-fade-in"),
        fadeOut: seconds(el, "data-helios-fade-out"),
        fadeEasing: attr("data-helios-fade-easing"),
        trackId: attr("data-helios-track-id"),
        noAudio: el.hasAttribute("data-helios-no-audio"),
        audio: attr("data-helios-audio"),
        start: attr("data-helios-start"),
        volumeAttr: attr("data-helios-volume"),
        trimStart: attr("data-helios-trim-start"),
        trimEnd: attr("data-helios-trim-end"),
        // As the core's DomDriver: the element's own volume/muted (before its fades) times the instance's
        // master volume and its data-helios-track-id track's volume; muted by either.
        muted: (state ? state.baseMuted : el.muted) || mixOf(h, attr("data-helios-track-id")).muted,
        volume: (state ? state.baseVolume : el.volume) * mixOf(h, attr("data-helios-track-id")).volume,
        duration: Number.isFinite(el.duration) ? el.duration : null,
      };
    });
  }
  // The render length a page declares: its Helios instance's, else its <meta name="helios"> tag's.
  function declaredLength() {
    const settings = compositionSettings();
    if (settings && settings.duration) return { duration: settings.duration, fps: settings.fps };
    try {
      const meta = document.querySelector('meta[name="helios"]');
      const content = meta ? JSON.parse(meta.getAttribute("content") || "{}") : {};
      return { duration: Number(content.duration) || null, fps: Number(content.fps) || null };
    } catch (e) {
      return { duration: null, fps: null };
    }
  }
  // What the page's Helios instance says about its size and length (for settings no flag or meta tag gave).
  function compositionSettings() {
    const h = coreInstance();
    if (!h) return null;
    const read = (signal) => {
      const value = signal && typeof signal === "object" && "value" in signal ? Number(signal.value) : NaN;
      return Number.isFinite(value) && value > 0 ? value : null;
    };
    return { width: read(h.width), height: read(h.height), fps: read(h.fps), duration: read(h.duration) };
  }

  // ---- same-origin iframes: their own shim, stepped in lockstep ---------------------------------------
  // The init script runs in every frame, so a same-origin iframe has its own virtual clock (and maybe its
  // own Helios instance); the original seek driver seeks every execution context, we step every child shim
  // to the same frame, fast-forward included.
  function childShim(iframe) {
    try {
      const child = iframe.contentWindow && iframe.contentWindow.__heliosInternal;
      return child && child !== window.__heliosInternal ? child : null;
    } catch (e) {
      return null; // cross-origin
    }
  }
  async function stepChildFrames(frame, capture) {
    let videoSeeks = 0;
    let unchecked = null;
    for (const iframe of document.querySelectorAll("iframe")) {
      const child = childShim(iframe);
      if (!child) continue;
      const result = await child.step(frame, capture);
      if (result && result.error) record("in iframe " + (iframe.getAttribute("src") || "(srcdoc)") + ": " + result.error);
      if (result && result.videoSeeks) videoSeeks += result.videoSeeks;
      if (result && result.videoUnchecked) unchecked = unchecked || result.videoUnchecked;
    }
    return { videoSeeks, unchecked };
  }

  // ---- the composition's own driver: window.helios and GSAP ----------------------------------------
  const describe = (error) => (error && error.message ? error.message : String(error));
  // A Helios instance is sought as the original seek driver does, with the integer frame; our own API (or a
  // page object with a seek hook) gets (frame, seconds) and may return a Promise the frame waits for.
  async function seekComposition(frame, deadline) {
    const h = coreInstance();
    if (h) {
      try { h.seek(instanceFrame(h, frame)); } catch (error) { record(describe(error)); }
      return;
    }
    const target = instance && typeof instance.seek === "function" ? instance : api;
    if (typeof target.seek !== "function") return;
    try {
      await withTimeout(Promise.resolve(target.seek(frame, now / 1000)), frame, deadline, "helios.seek");
    } catch (error) {
      record(describe(error));
    }
  }
  // window.__helios_gsap_timeline__ (paused or not) is sought to the frame's time, as the original does.
  function seekGsapTimeline() {
    const timeline = window.__helios_gsap_timeline__;
    if (!timeline || typeof timeline.seek !== "function") return;
    try { timeline.seek(now / 1000); } catch (error) { record(describe(error)); }
  }
  // Media without any source never become ready; the core's DomDriver would wait for them forever. They
  // sit out the wait (a missing src is a warning of the audio discovery, never a failed render).
  function hasSource(el) {
    return Boolean(el.currentSrc || el.src || (el.querySelector && el.querySelector("source[src]")));
  }
  // helios.waitUntilStable() (the core's: its driver, fonts, images, media, registerStabilityCheck checks)
  // after each seek, bounded by the render timeout. True when there was one to wait for.
  async function waitUntilStable(frame, deadline) {
    const target = instance || api;
    if (typeof target.waitUntilStable !== "function") return false;
    const driverMedia = target.driver && target.driver.mediaElements instanceof Set ? target.driver.mediaElements : null;
    const parked = driverMedia ? [...driverMedia].filter((el) => !hasSource(el)) : [];
    for (const el of parked) driverMedia.delete(el);
    try {
      await withTimeout(Promise.resolve(target.waitUntilStable()), frame, deadline,
        "helios.waitUntilStable() did not settle within the render timeout");
    } catch (error) {
      if (String(describe(error)).startsWith("timeout:")) throw error;
      record("helios.waitUntilStable() failed: " + describe(error));
    } finally {
      for (const el of parked) driverMedia.add(el);
    }
    return true;
  }

  // ---- one frame -----------------------------------------------------------------------------------
  async function step(frame, capture) {
    const target = (frame * 1000) / FPS;
    const deadline = RealDate.now() + CONFIG.timeoutMs;
    currentFrame = frame;
    if (target + EPS < now) throw new Error("virtual time only moves forward (frame " + frame + ")");
    // Timers in due order, each at its own due time; then rAF at the frame time.
    for (;;) {
      const next = nextDue(target);
      if (!next) break;
      const [id, timer] = next;
      now = Math.max(now, timer.due);
      if (timer.interval !== null) timer.due += timer.interval, timer.seq = seq++;
      else timers.delete(id);
      invoke(timer.fn, timer.args || [], "timer");
      collectAnimations();
      await macrotask();
    }
    now = target;
    setVirtualTime(frame);
    dispatchCssProgress();
    dispatchFinishes();
    await macrotask();
    collectAnimations();
    const callbacks = rafQueue;
    rafQueue = new Map();
    for (const fn of callbacks.values()) invoke(fn, [now], "requestAnimationFrame");
    await macrotask();
    await seekComposition(frame, deadline);
    seekGsapTimeline();
    const list = collectAnimations();
    await withTimeout(settleAnimations(), frame, deadline, "animation.ready");
    await withTimeout(seekAnimations(list), frame, deadline, "animation.ready");
    await waitHolds(frame, deadline);
    if (await waitUntilStable(frame, deadline)) {
      // As the original seek driver: what settled late (fetched data, loaded images) may have moved a
      // GSAP timeline or the instance's state; seek both again.
      seekGsapTimeline();
      const h = coreInstance();
      if (h) { try { h.seek(instanceFrame(h, frame)); } catch (error) { record(describe(error)); } }
      await withTimeout(seekAnimations(collectAnimations()), frame, deadline, "animation.ready");
    }
    const children = await stepChildFrames(frame, capture);
    let videoSeeks = children.videoSeeks;
    if (capture) {
      await awaitAssets(frame, deadline);
      videoSeeks += await seekVideos(frame, deadline);
    }
    else noteMedia();
    if (errors.length) return { error: errors[0] };
    const videoCheck = capture ? videoProbes.length : 0;
    const unchecked = capture ? children.unchecked || videoUnchecked : null;
    return videoSeeks || videoCheck || unchecked ? { videoSeeks, videoCheck, videoUnchecked: unchecked } : null;
  }

  // ---- canvas capture ------------------------------------------------------------------------------
  function frameCanvas() {
    const canvases = document.querySelectorAll("canvas");
    if (canvases.length !== 1) return null;
    return canvases[0];
  }
  function canvasInfo(width, height) {
    const canvas = frameCanvas();
    if (!canvas) return { usable: false, reason: document.querySelectorAll("canvas").length + " canvases" };
    const rect = canvas.getBoundingClientRect();
    const covers = rect.left <= 0.5 && rect.top <= 0.5 && rect.right >= width - 0.5 && rect.bottom >= height - 0.5;
    const exact = canvas.width === width && canvas.height === height;
    // Anything else visible on top of or beside the canvas would be lost.
    let others = 0;
    for (const el of document.body ? document.body.querySelectorAll("*") : []) {
      if (el === canvas || el.contains(canvas) || ["SCRIPT", "STYLE", "LINK", "META", "TEMPLATE"].includes(el.tagName)) continue;
      const r = el.getBoundingClientRect();
      const style = getComputedStyle(el);
      if (r.width > 0 && r.height > 0 && style.visibility !== "hidden" && style.display !== "none" && style.opacity !== "0") others++;
    }
    return { usable: covers && exact && others === 0, covers, exact, others, context: canvas.__heliosContextType || null };
  }
  // The canvas is composited over the page background, as a screenshot would show it (a transparent
  // canvas would otherwise come out black in JPEG/yuv).
  let scratch = null;
  function pageBackground() {
    for (const el of [document.body, document.documentElement]) {
      if (!el) continue;
      const color = getComputedStyle(el).backgroundColor;
      if (color && color !== "transparent" && !/^rgba\(.*,\s*0\)$/.test(color)) return color;
    }
    return "#ffffff";
  }
  // The composition's canvas composited over the page background (what a DOM capture would show).
  function compositeCanvas() {
    const canvas = frameCanvas();
    if (!canvas) throw new Error("canvas capture: the page has no single canvas");
    if (!scratch || scratch.width !== canvas.width || scratch.height !== canvas.height) {
      scratch = document.createElement("canvas");
      scratch.width = canvas.width;
      scratch.height = canvas.height;
    }
    const g = scratch.getContext("2d", { alpha: false });
    g.fillStyle = pageBackground();
    g.fillRect(0, 0, scratch.width, scratch.height);
    g.drawImage(canvas, 0, 0);
    return scratch;
  }
  function captureCanvas(type, quality) {
    const url = compositeCanvas().toDataURL(type, quality);
    return url.slice(url.indexOf(",") + 1);
  }

  // Pipelined canvas capture: the frame's pixels are snapshotted (ImageBitmap) and encoded by a worker
  // while the main thread already steps and draws the next frame; each call returns the previous frame.
  const WORKER_SOURCE = `
    self.onmessage = async (event) => {
      const { id, bitmap, type, quality } = event.data;
      try {
        // One canvas for every frame: a fresh 1280x720 one per frame cost the worker ~1.5 ms of page faults
        // (its CPU on examples/particles, 60 frames: 0.53 -> 0.44 s; the frames are byte-identical).
        if (!self.canvas || self.canvas.width !== bitmap.width || self.canvas.height !== bitmap.height) {
          self.canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
          self.context = self.canvas.getContext("2d", { alpha: false });
        }
        const canvas = self.canvas;
        self.context.drawImage(bitmap, 0, 0);
        bitmap.close();
        const blob = await canvas.convertToBlob({ type, quality });
        const url = new FileReaderSync().readAsDataURL(blob);
        self.postMessage({ id, data: url.slice(url.indexOf(",") + 1) });
      } catch (error) {
        self.postMessage({ id, error: String(error && error.message || error) });
      }
    };`;
  let encoder = null;
  const encodeWaiters = new Map();
  let inFlight = null; // promise of the previous frame's {data}
  function encoderWorker() {
    if (encoder) return encoder;
    const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    encoder = new Worker(url);
    encoder.onmessage = (event) => {
      const waiter = encodeWaiters.get(event.data.id);
      encodeWaiters.delete(event.data.id);
      if (waiter) waiter(event.data);
    };
    return encoder;
  }
  async function snapshotCanvas() {
    return createImageBitmap(compositeCanvas());
  }

  window.__heliosInternal = {
    async stepAndCapturePipelined(frame, type, quality) {
      const result = await step(frame, true);
      if (result && result.error) return result;
      const bitmap = await snapshotCanvas();
      const worker = encoderWorker();
      const previous = inFlight;
      inFlight = new Promise((resolve) => encodeWaiters.set(frame, resolve));
      worker.postMessage({ id: frame, bitmap, type, quality }, [bitmap]);
      return previous ? await previous : { data: null };
    },
    async flushCapture() {
      const previous = inFlight;
      inFlight = null;
      return previous ? await previous : { data: null };
    },
    step,
    prepare,
    compositionSettings,
    describeMedia,
    declaredLength,
    errors: () => errors.slice(),
    async fastForward(from, to) {
      skipDraws = true;
      try {
        for (let f = from; f < to; f++) {
          const result = await step(f, false);
          if (result) return Object.assign(result, { frame: f });
        }
      } finally {
        skipDraws = false;
      }
      return null;
    },
    async stepAndCapture(frame, type, quality) {
      const result = await step(frame, true);
      if (result && result.error) return result;
      return { data: captureCanvas(type, quality) };
    },
    canvasInfo,
    checkVideoShot,
    realRaf,
    get now() { return now; },
  };
})();
