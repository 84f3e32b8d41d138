// Live video by stream copy: the camera's own H.264 as fragmented MP4 over a WebSocket, played
// through Media Source Extensions (custodes.live.stream, api/routes/live_stream.py). Only for
// roles allowed to see originals; the server refuses everyone else. Also the digital zoom and
// fullscreen of a single tile, for both kinds of tile.
"use strict";

const liveStream = (() => {
  const LIVE_EDGE = 0.1; // seconds behind the newest frame a player aims at
  const CATCH_UP = 0.25; // further behind than this, it plays a little faster
  const MAX_BEHIND = 1.0; // further behind than this, it jumps to the live edge
  const KEEP = 10; // seconds of played video kept in the buffer
  const RETRY_MS = 2000;

  // What a close code means to the tile (see api/routes/live_stream.py).
  function closed(code, reason) {
    if (code === 4401) return ["signin", reason || "sign in first"];
    if (code === 4403 || code === 1008) return ["forbidden", reason || "no permission"];
    if (code === 4404) return ["down", reason || "no such camera"];
    if (code === 1013) return ["busy", reason || "server busy"];
    if (code === 1012) return ["down", reason || "live video stopped"];
    return ["offline", reason || "connection to the recorder lost"];
  }

  // Plays `camera`'s `kind` stream ("sub" or "main") in `video`. `on` gets:
  //   state(kind, detail)   starting, live, busy, down, forbidden, offline
  //   unsupported(mime)     this browser cannot play the camera's codec
  //   signin()              the session is over
  // Returns { close() }. Reconnects by itself after a lost connection or a camera down.
  function play(video, camera, kind, on) {
    let ws = null, ms = null, sb = null, url = null;
    let queue = [], anchor = null, stopped = false, retry = null, frames = 0;
    video.muted = true; video.playsInline = true; video.autoplay = true;

    function reset() {
      queue = []; sb = null;
      if (url) { video.removeAttribute("src"); video.load(); URL.revokeObjectURL(url); url = null; }
      ms = null;
    }

    function connect() {
      if (stopped) return;
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(`${proto}//${location.host}/api/cameras/${encodeURIComponent(camera)}` +
                         `/live/stream?stream=${kind}`);
      ws.binaryType = "arraybuffer";
      on.state("starting", "connecting to the recorder");
      // The session's CSRF token, as every state-changing request sends it.
      ws.onopen = () => ws.send(JSON.stringify({ csrf: custodes.cookie("custodes_csrf") }));
      ws.onmessage = (e) => {
        if (typeof e.data === "string") control(JSON.parse(e.data));
        else { queue.push(e.data); pump(); }
      };
      ws.onclose = (e) => {
        ws = null;
        if (stopped) return;
        const [state, why] = closed(e.code, e.reason);
        if (state === "signin") { on.signin(); return; }
        on.state(state, why);
        // No permission stays so until a grant changes: ask rarely. Others: soon.
        retry = setTimeout(connect, state === "forbidden" ? 10 * RETRY_MS : RETRY_MS);
      };
    }

    function control(m) {
      if (m.type === "state") on.state(m.state, m.detail);
      else if (m.type === "clock") anchor = m.anchor;
      else if (m.type === "init") {
        anchor = m.anchor;
        if (!window.MediaSource || !MediaSource.isTypeSupported(m.mime)) {
          stop(); on.unsupported(m.mime); return;
        }
        video.dataset.width = m.width; video.dataset.height = m.height;
        reset();
        ms = new MediaSource();
        url = URL.createObjectURL(ms);
        video.src = url;
        const mine = ms;
        ms.addEventListener("sourceopen", () => {
          if (ms !== mine) return;
          sb = ms.addSourceBuffer(m.mime);
          sb.mode = "segments";
          sb.addEventListener("updateend", () => { follow(); pump(); });
          pump();
        }, { once: true });
      }
    }

    function pump() {
      if (!sb || sb.updating || !queue.length) return;
      try {
        sb.appendBuffer(queue.shift());
      } catch (err) { // QuotaExceeded or a broken stream: start again from a keyframe
        on.state("starting", "restarting the player: " + err.name);
        if (ws) ws.close();
      }
    }

    // Keep near the newest frame: a tab in the background or a slow moment must not leave
    // the picture seconds behind; drop what was played long ago.
    function follow() {
      const b = video.buffered;
      if (!b.length) return;
      const end = b.end(b.length - 1);
      const behind = end - video.currentTime;
      if (video.currentTime < b.start(0) || behind > MAX_BEHIND) {
        video.currentTime = Math.max(b.start(b.length - 1), end - LIVE_EDGE);
      } else {
        // Unnoticeably faster until back near the edge: no jump, no frozen picture.
        video.playbackRate = behind > CATCH_UP ? 1.1 : behind < LIVE_EDGE ? 1.0 : video.playbackRate;
      }
      video.dataset.buffer = behind.toFixed(3);
      if (video.paused) video.play().catch(() => { /* muted autoplay is allowed */ });
      if (!sb.updating && video.currentTime - b.start(0) > 2 * KEEP) {
        sb.remove(b.start(0), video.currentTime - KEEP);
      }
    }

    // Per shown frame: how old it is. Its capture time is the stream's clock anchor (the
    // server's wall clock for decode time 0) plus its media time; the age assumes the two
    // machines' clocks agree (NTP), as they do when both are one machine.
    function onFrame(now, meta) {
      if (stopped) return;
      frames += 1;
      video.dataset.frames = String(frames);
      if (anchor !== null) {
        const capture = anchor + meta.mediaTime;
        const shown = (performance.timeOrigin + meta.expectedDisplayTime) / 1000;
        video.dataset.capture = capture.toFixed(3);
        video.dataset.latency = (shown - capture).toFixed(3);
      }
      if (frames === 1) on.state("live", "");
      video.requestVideoFrameCallback(onFrame);
    }
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);

    function stop() {
      stopped = true;
      clearTimeout(retry);
      if (ws) { ws.onclose = null; ws.close(); ws = null; }
      reset();
    }
    connect();
    return { close: stop };
  }

  // Digital zoom of `media` inside `box`: the wheel or a pinch zooms (1x to 8x) around the
  // pointer, a drag pans. `enabled()` says whether the tile may zoom now (single view).
  function zoomable(box, media, enabled) {
    let scale = 1, x = 0, y = 0;
    const pointers = new Map();
    let pinch = null, dragged = false;
    function apply() {
      // Keep the picture covering the tile: no panning past its edges.
      const w = box.clientWidth, h = box.clientHeight;
      x = Math.min(0, Math.max(w - w * scale, x));
      y = Math.min(0, Math.max(h - h * scale, y));
      media.style.transformOrigin = "0 0";
      media.style.transform = scale === 1 ? "" : `translate(${x}px, ${y}px) scale(${scale})`;
      box.dataset.zoom = scale.toFixed(2);
    }
    function zoomAt(px, py, factor) {
      const next = Math.min(8, Math.max(1, scale * factor));
      x = px - (px - x) * (next / scale);
      y = py - (py - y) * (next / scale);
      scale = next;
      apply();
    }
    function local(e) {
      const r = box.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    }
    box.addEventListener("wheel", (e) => {
      if (!enabled()) return;
      e.preventDefault();
      const [px, py] = local(e);
      zoomAt(px, py, Math.exp(-e.deltaY / 300));
    }, { passive: false });
    box.addEventListener("pointerdown", (e) => {
      if (!enabled() || e.target.closest("button")) return;
      pointers.set(e.pointerId, local(e));
      dragged = false;
      box.setPointerCapture(e.pointerId);
    });
    box.addEventListener("pointermove", (e) => {
      if (!pointers.has(e.pointerId)) return;
      const [px, py] = local(e);
      const [ox, oy] = pointers.get(e.pointerId);
      pointers.set(e.pointerId, [px, py]);
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
        if (pinch) zoomAt((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, d / pinch);
        pinch = d;
      } else if (scale > 1) {
        x += px - ox; y += py - oy; dragged = dragged || Math.abs(px - ox) + Math.abs(py - oy) > 2;
        apply();
      }
    });
    const up = (e) => { pointers.delete(e.pointerId); if (pointers.size < 2) pinch = null; };
    box.addEventListener("pointerup", up);
    box.addEventListener("pointercancel", up);
    // A drag that panned is not a click on the tile.
    box.addEventListener("click", (e) => { if (dragged) { e.stopImmediatePropagation(); dragged = false; } }, true);
    return { reset() { scale = 1; x = 0; y = 0; apply(); }, get scale() { return scale; } };
  }

  function fullscreen(box) {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (box.requestFullscreen) box.requestFullscreen().catch(() => { /* refused */ });
  }

  return { play, zoomable, fullscreen };
})();
