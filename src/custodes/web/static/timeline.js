// Timeline of one camera and day: coverage, gaps, motion and faces; click to play from there.
// Playback chains the recorded segment files in two <video> elements, the next one loading
// while the current one plays, so a segment boundary does not stall. Redacted copies go
// through Media Source Extensions (see `stream`).
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const $ = (id) => document.getElementById(id);
  const cameraSel = $("camera"), dayInput = $("day"), zoomSel = $("zoom");
  const dayBar = $("daybar"), detailBar = $("detailbar");
  const videos = [$("va"), $("vb")];
  const clock = $("clock"), stateEl = $("state"), msg = $("message");
  const redactedBox = $("redacted");

  // The day shown is the site's (its time zone's midnight to midnight: 23 or 25 hours when
  // the clocks change), and every time on the page is the site's local time.
  let camera = cameraSel.value;
  let [dayStart, dayEnd] = custodes.dayRange(dayInput.value) || custodes.dayRange(custodes.day(Date.now() / 1000));
  let zoom = Number(zoomSel.value);
  let detailStart = dayStart;
  let tl = null;

  // player state
  let queue = [], idx = 0, active = 0, preloaded = -1, more = false, fetchingMore = false;
  let playSeq = 0;
  let markIn = null, markOut = null;
  const firstFrames = [];
  // Where each click's wait went: ms after the click of each step up to its first frame
  // (answer: the playback answer; fetch, headers, bytes: the copy's request, its answer's
  // head and first bytes; buffer: those appended; loaded, shown: the frame decoded, painted).
  const steps = [];

  const api = (path) => custodes.api("GET", path);
  const enc = encodeURIComponent;

  let loadingAt = null; // the moment asked for, until its first frame is there

  function playing() {
    if (loadingAt !== null) return loadingAt;
    const seg = queue[idx];
    return seg ? seg.start + videos[active].currentTime : null;
  }

  // -- timeline ---------------------------------------------------------------------------

  async function load() {
    try {
      tl = await api(`/api/cameras/${enc(camera)}/timeline?day=${custodes.day(dayStart)}`);
      draw();
    } catch (err) {
      custodes.message(msg, "timeline: " + err.message, "bad");
    }
  }

  function clip(spans, from, to) {
    return spans.filter((s) => s.end > from && s.start < to);
  }

  function place(el, from, to, start, end) {
    const w = to - from;
    el.style.left = (100 * (Math.max(start, from) - from) / w) + "%";
    if (end !== undefined) {
      el.style.width = (100 * (Math.min(end, to) - Math.max(start, from)) / w) + "%";
    }
    return el;
  }

  function fill(bar, from, to) {
    const parts = [];
    if (tl) {
      for (const g of clip(tl.gaps, from, to)) {
        parts.push(place(custodes.el("div", { class: "gap" }), from, to, g.start, g.end));
      }
      for (const s of clip(tl.coverage, from, to)) {
        parts.push(place(custodes.el("div", { class: "span" }), from, to, s.start, s.end));
      }
      // Motion spans closer than a pixel or so are merged: a busy day stays a few hundred divs.
      const near = (to - from) / 1500;
      let last = null;
      for (const m of clip(tl.motion, from, to)) {
        if (last && m.start - last.end < near) { last.end = Math.max(last.end, m.end); continue; }
        last = { start: m.start, end: m.end };
        parts.push(last);
      }
      for (let i = 0; i < parts.length; i++) {
        const p = parts[i];
        if (!(p instanceof Element)) {
          parts[i] = place(custodes.el("div", { class: "motion" }), from, to, p.start,
                           Math.max(p.end, p.start + near));
        }
      }
      for (const f of clip(tl.faces, from, to)) {
        parts.push(place(custodes.el("div", { class: "face", title: "face seen " + custodes.utc(f.start) }),
                         from, to, f.start));
      }
    }
    const head = custodes.el("div", { class: "head hidden" });
    const hover = custodes.el("div", { class: "hover hidden" });
    bar.replaceChildren(...parts, head, hover);
    bar.head = head; bar.hover = hover; bar.from = from; bar.to = to;
  }

  // Ticks on the site's round hours and minutes (a zone may be 30 or 45 min off UTC).
  function ticks(target, from, to, step) {
    const out = [];
    const shift = custodes.offset(from);
    for (let t = Math.ceil((from + shift) / step) * step - shift; t <= to; t += step) {
      out.push(place(custodes.el("span", {}, custodes.utc(t, false).slice(0, 5)), from, to, t));
    }
    target.replaceChildren(...out);
  }

  function draw() {
    fill(dayBar, dayStart, dayEnd);
    const win = place(custodes.el("div", { class: "window" }), dayStart, dayEnd,
                      detailStart, detailStart + zoom);
    dayBar.insertBefore(win, dayBar.head);
    ticks($("dayticks"), dayStart, dayEnd, 7200);
    fill(detailBar, detailStart, detailStart + zoom);
    ticks($("detailticks"), detailStart, detailStart + zoom,
          zoom <= 600 ? 60 : zoom <= 3600 ? 300 : 1800);
    moveHead();
  }

  function moveHead() {
    const t = playing();
    for (const bar of [dayBar, detailBar]) {
      if (!bar.head) continue;
      const inside = t !== null && t >= bar.from && t <= bar.to;
      bar.head.classList.toggle("hidden", !inside);
      if (inside) place(bar.head, bar.from, bar.to, t);
    }
    if (t !== null) clock.textContent = custodes.local(t) + " " + custodes.zone();
  }

  function timeAt(bar, event) {
    const r = bar.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - r.left, 0), r.width);
    return bar.from + (bar.to - bar.from) * x / r.width;
  }

  function centreDetail(t) {
    detailStart = Math.min(Math.max(dayStart, t - zoom / 2), dayEnd - zoom);
    detailStart = Math.floor(detailStart / 60) * 60;
  }

  // The pointer resting HOVER_MS on a spot asks the server to prepare the redacted copy a
  // click there would get. The server keeps one such request a viewer (each replaces the
  // last), below any click's; sweeping the pointer sends none.
  const HOVER_MS = 300;
  let hoverTimer = null, hoveredAt = null;
  const prefetches = [];  // what was asked: {t, from} (from: null if nothing was to be made)
  function hoverAt(t) {
    clearTimeout(hoverTimer);
    hoverTimer = setTimeout(async () => {
      hoverTimer = null;
      if (!redactedBox.checked || (hoveredAt !== null && Math.abs(hoveredAt - t) < 0.5)) return;
      hoveredAt = t;
      try {
        const r = await custodes.api("POST", `/api/cameras/${enc(camera)}/prefetch?at=${t.toFixed(3)}`);
        prefetches.push({ t, from: r.from });
      } catch (err) { /* a hint only: the click asks again and says what is wrong */ }
    }, HOVER_MS);
  }

  for (const bar of [dayBar, detailBar]) {
    bar.addEventListener("mousemove", (e) => {
      if (!bar.hover) return;
      const t = timeAt(bar, e);
      bar.hover.textContent = custodes.utc(t, false);
      place(bar.hover, bar.from, bar.to, t);
      bar.hover.classList.remove("hidden");
      hoverAt(t);
    });
    bar.addEventListener("mouseleave", () => {
      clearTimeout(hoverTimer);
      if (bar.hover) bar.hover.classList.add("hidden");
    });
    bar.addEventListener("click", (e) => {
      clearTimeout(hoverTimer);  // the click asks for the copy itself
      const t = timeAt(bar, e);
      if (bar === dayBar) { centreDetail(t); draw(); }
      playAt(t);
    });
  }

  // -- playback ---------------------------------------------------------------------------

  function state(text) { stateEl.textContent = text; }

  function reset(v) {
    v.pause();
    detach(v);
    v.removeAttribute("src");
    delete v.dataset.url;
    v.load();
  }

  // What a <video> plays: the segment's file, or for a redacted copy its bytes as they come.
  // `mark(step)`: notes when a step of the first frame's wait is done (see `steps`).
  function setSource(v, seg, mark = () => {}) {
    detach(v);
    v.dataset.url = seg.url;
    if (!seg.redacted || !window.MediaSource) {
      // Without MSE a tail (see stream) cannot be placed in its segment: the whole copy.
      v.src = seg.from ? seg.url.replace(/\?from=[^&]*$/, "") : seg.url;
      return;
    }
    const source = new MediaSource();
    const abort = new AbortController();
    v.feed = { abort, url: URL.createObjectURL(source) };
    // The request leaves now, not once the MediaSource is open (a round of the event loop,
    // more on a busy machine): its answer waits for the copy's first frame anyway.
    mark("fetch");
    const answer = fetch(seg.url, { signal: abort.signal });
    answer.catch(() => {});  // seen by `stream`; unhandled only if the source never opens
    source.addEventListener("sourceopen", () => stream(source, seg, answer, abort.signal, mark),
                            { once: true });
    v.src = v.feed.url;
  }

  // Stops the fetch of a redacted copy: the server gives up a copy nobody waits for.
  function detach(v) {
    if (!v.feed) return;
    v.feed.abort.abort();
    URL.revokeObjectURL(v.feed.url);
    v.feed = null;
  }

  // A redacted copy not yet made is sent while it is made, as fragmented MP4 without a
  // length. Given to <video src>, chromium shows nothing before it has read ~1.7 s of it and
  // cannot start at an offset of a file still arriving; appended to a SourceBuffer, each
  // fragment plays as it comes and the start position is reached as soon as it is there.
  async function stream(source, seg, answer, signal, mark) {
    try {
      const r = await answer;
      if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
      mark("headers");
      source.duration = seg.duration;
      const reader = r.body.getReader();
      let buffer = null, head = new Uint8Array(0);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        let bytes = value;
        if (!buffer) {
          mark("bytes");
          // The codec string (profile and level) is in the index's avcC box.
          head = concat(head, value);
          const codec = avcCodec(head);
          if (!codec) continue;
          buffer = source.addSourceBuffer(`video/mp4; codecs="${codec}"`);
          // A tail (a click into the middle of a segment whose copy was not made) starts at
          // a frame `from` seconds in, its first frame at 0: placed there, the segment's
          // times stay the player's. The answer says where it starts (X-Copy-From): the whole
          // copy may have been started meanwhile, and is then what comes.
          const from = Number(r.headers.get("X-Copy-From"));
          buffer.timestampOffset = Number.isFinite(from) && r.headers.has("X-Copy-From")
            ? from : (seg.from || 0);
          bytes = head;
        }
        buffer.appendBuffer(bytes);
        await new Promise((ok) => buffer.addEventListener("updateend", ok, { once: true }));
        mark("buffer");
      }
      if (!buffer) throw new Error("no video in the answer");
      if (source.readyState === "open") source.endOfStream();
    } catch (err) {
      if (signal.aborted) return;
      // A copy cut short (its redaction failed) is an error, never a shorter video.
      if (source.readyState === "open") source.endOfStream("network");
    }
  }

  function concat(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a); out.set(b, a.length);
    return out;
  }

  function avcCodec(b) {
    for (let i = 4; i + 8 <= b.length; i++) {
      if (b[i] === 0x61 && b[i + 1] === 0x76 && b[i + 2] === 0x63 && b[i + 3] === 0x43) {
        const hex = (x) => x.toString(16).padStart(2, "0");
        return "avc1." + hex(b[i + 5]) + hex(b[i + 6]) + hex(b[i + 7]);
      }
    }
    return null;
  }

  async function playAt(t) {
    const seq = ++playSeq;
    const clicked = performance.now();
    let answered = null;
    custodes.message(msg, "", "");
    state("loading…");
    let p;
    try {
      const redacted = redactedBox.checked ? "&redacted=true" : "";
      p = await api(`/api/cameras/${enc(camera)}/playback?at=${t.toFixed(3)}${redacted}`);
    } catch (err) {
      if (seq === playSeq) { state(""); custodes.message(msg, err.message, "bad"); }
      return;
    }
    if (seq !== playSeq) return;
    answered = performance.now();
    loadingAt = p.start;
    queue = p.segments; idx = 0; more = p.more; preloaded = -1;
    const history = new URLSearchParams({ camera, day: custodes.day(dayStart), at: t.toFixed(0) });
    window.history.replaceState(null, "", "?" + history);
    reset(videos[1 - active]);
    videos[1 - active].classList.add("hidden");
    videos[active].classList.remove("hidden");
    if (p.start > t + 1) {
      custodes.message(msg, `No recording at ${custodes.utc(t)}; playing from the next recording at ${custodes.utc(p.start)}.`, "busy");
    }
    start(videos[active], queue[0], p.offset, seq, clicked, answered);
  }

  function start(v, seg, offset, seq, clicked, answered = null) {
    const marks = clicked === null ? null : { answer: answered - clicked };
    const mark = (step) => {
      if (marks && seq === playSeq && !(step in marks)) marks[step] = performance.now() - clicked;
    };
    setSource(v, seg, mark);
    // Set before the metadata arrives, this is the default start position: the first frame
    // shown is the asked-for moment, not the start of the segment.
    v.currentTime = offset;
    v.playbackRate = Number($("rate").value);
    // "loadeddata": the new file's frame at the start position is decoded. Frame callbacks
    // before it may still show the previous file's picture.
    const loaded = () => {
      v.removeEventListener("loadeddata", loaded);
      if (seq !== playSeq) return;
      mark("loaded");
      if ("requestVideoFrameCallback" in v) v.requestVideoFrameCallback(shown);
      else shown();
    };
    v.addEventListener("loadeddata", loaded);
    const shown = () => {
      if (seq !== playSeq) return;
      loadingAt = null;
      if (clicked !== null) {
        const ms = performance.now() - clicked;
        firstFrames.push(ms);
        marks.shown = ms;
        steps.push(marks);
        const sorted = [...firstFrames].sort((a, b) => a - b);
        const median = sorted[Math.floor(sorted.length / 2)];
        $("firstframe").textContent =
          `first frame ${ms.toFixed(0)} ms (median ${median.toFixed(0)} ms of ${sorted.length})`;
      }
    };
    v.play().catch(() => { /* autoplay refused or replaced: the play button still works */ });
  }

  async function fetchMore() {
    if (fetchingMore || !more || !queue.length) return;
    fetchingMore = true;
    const seq = playSeq;
    try {
      const last = queue[queue.length - 1];
      const redacted = redactedBox.checked ? "&redacted=true" : "";
      const p = await api(`/api/cameras/${enc(camera)}/playback?at=${last.end.toFixed(3)}${redacted}`);
      if (seq !== playSeq) return;
      const known = new Set(queue.map((s) => s.id));
      queue.push(...p.segments.filter((s) => !known.has(s.id)));
      more = p.more;
    } catch (err) {
      more = false;
    } finally {
      fetchingMore = false;
    }
  }

  function onTimeUpdate(e) {
    const v = e.target;
    if (v !== videos[active]) return;
    moveHead();
    if (idx + 1 >= queue.length) { fetchMore(); return; }
    if (preloaded !== idx + 1 && v.duration - v.currentTime < 4) {
      const other = videos[1 - active];
      setSource(other, queue[idx + 1]);  // setting the source loads it
      other.currentTime = 0;
      preloaded = idx + 1;
    }
  }

  function onEnded(e) {
    if (e.target !== videos[active]) return;
    idx += 1;
    if (idx >= queue.length) {
      state(more ? "loading…" : "end of recordings");
      if (more) fetchMore().then(() => { if (idx < queue.length) start(videos[active], queue[idx], 0, playSeq, null); });
      return;
    }
    if (preloaded === idx) {
      const old = videos[active];
      active = 1 - active;
      const v = videos[active];
      v.playbackRate = Number($("rate").value);
      v.play().catch(() => {});
      // The last picture stays up until the next file has one (a redacted copy may still
      // be in the making): no black flash between segments.
      const seq = playSeq;
      const swap = () => {
        if (seq !== playSeq || videos[active] !== v) return;
        v.classList.remove("hidden");
        old.classList.add("hidden");
        reset(old);
      };
      if (v.readyState >= 2) swap(); else v.addEventListener("loadeddata", swap, { once: true });
    } else {
      start(videos[active], queue[idx], 0, playSeq, null);
    }
  }

  for (const v of videos) {
    v.addEventListener("timeupdate", onTimeUpdate);
    v.addEventListener("ended", onEnded);
    v.addEventListener("playing", (e) => {
      if (e.target !== videos[active]) return;
      const seg = queue[idx];
      state(seg && seg.redacted ? "redacted copy" : "original recording");
      $("playpause").textContent = "Pause";
    });
    v.addEventListener("pause", (e) => {
      if (e.target === videos[active]) $("playpause").textContent = "Play";
    });
    v.addEventListener("waiting", (e) => {
      if (e.target !== videos[active]) return;
      const seg = queue[idx];
      state(seg && seg.redacted ? "preparing the redacted copy…" : "loading…");
    });
    v.addEventListener("error", (e) => {
      if (e.target !== videos[active] || !v.getAttribute("src")) return;
      state("");
      custodes.message(msg, "this recording could not be played", "bad");
    });
  }

  $("playpause").addEventListener("click", () => {
    const v = videos[active];
    if (!queue.length) { playAt(detailStart); return; }
    if (v.paused) v.play().catch(() => {}); else v.pause();
  });
  for (const b of document.querySelectorAll("[data-step]")) {
    b.addEventListener("click", () => {
      const now = playing();
      if (now === null) return;
      const target = now + Number(b.dataset.step);
      const seg = queue[idx];
      if (target >= seg.start + (seg.from || 0) && target < seg.end - 0.2) {
        videos[active].currentTime = target - seg.start; // inside this file: a plain seek
      } else {
        playAt(target);
      }
    });
  }
  $("rate").addEventListener("change", () => { videos[active].playbackRate = Number($("rate").value); });
  redactedBox.addEventListener("change", () => { const t = playing(); if (t !== null) playAt(t); });

  // -- marks and export -------------------------------------------------------------------

  function showMarks() {
    const link = $("export");
    if (!link) return;
    $("marks").textContent = markIn || markOut
      ? `${markIn ? custodes.utc(markIn, false) : "…"} – ${markOut ? custodes.utc(markOut, false) : "…"}` : "";
    const now = playing() ?? detailStart;
    const from = markIn ?? now - 30, to = markOut && markOut > from ? markOut : from + 60;
    link.href = `/exports?camera=${enc(camera)}&start=${from.toFixed(0)}&end=${to.toFixed(0)}`;
  }
  if ($("markin")) {
    $("markin").addEventListener("click", () => { markIn = playing(); showMarks(); });
    $("markout").addEventListener("click", () => { markOut = playing(); showMarks(); });
    $("export").addEventListener("mouseenter", showMarks);
    $("export").addEventListener("focus", showMarks);
  }

  // -- navigation -------------------------------------------------------------------------

  function setDay(t) {
    dayInput.value = custodes.day(t);
    [dayStart, dayEnd] = custodes.dayRange(dayInput.value);
    centreDetail(Math.min(Date.now() / 1000, dayEnd));
  }
  cameraSel.addEventListener("change", () => {
    camera = cameraSel.value; playSeq++; queue = [];
    for (const v of videos) reset(v);
    clock.textContent = "click the timeline to play"; state("");
    load();
  });
  dayInput.addEventListener("change", () => {
    const range = custodes.dayRange(dayInput.value.trim());
    if (range) { setDay(range[0]); load(); }
    else custodes.message(msg, `"${dayInput.value}" is not a day: write YYYY-MM-DD`, "bad");
  });
  $("prevday").addEventListener("click", () => { setDay(dayStart - 1); load(); });
  $("nextday").addEventListener("click", () => { setDay(dayEnd); load(); });

  // -- go to a time -----------------------------------------------------------------------

  // Show the day of t with t in the detail bar, and play from there.
  async function goTo(t) {
    const sameDay = t >= dayStart && t < dayEnd;
    if (!sameDay) setDay(t);
    centreDetail(t);
    if (sameDay) draw(); else await load();
    await playAt(t);
  }
  // "YYYY-MM-DD HH:MM[:SS]", or "HH:MM[:SS]" on the day shown; site-local, 24-hour.
  function readGoTo(text) {
    const v = text.trim();
    if (/^\d{2}:\d{2}(:\d{2})?$/.test(v)) return custodes.fromInput(custodes.day(dayStart) + " " + v);
    return custodes.fromInput(v);
  }
  $("goto-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = readGoTo($("goto").value);
    if (t === null) {
      custodes.message(msg, `"${$("goto").value}" is not a time: write YYYY-MM-DD HH:MM:SS or HH:MM (24-hour, ${custodes.zone()})`, "bad");
      return;
    }
    goTo(t);
  });
  // The latest recording: a segment is in the index once it is closed, so "now" is the end
  // of the newest one, a few seconds back.
  $("goto-now").addEventListener("click", async () => {
    const now = Date.now() / 1000;
    if (now < dayStart || now >= dayEnd) { setDay(now); }
    await load();
    const last = tl && tl.coverage.length ? tl.coverage[tl.coverage.length - 1] : null;
    if (!last) { custodes.message(msg, "nothing recorded today yet", "busy"); return; }
    const t = Math.max(last.start, last.end - 5);
    $("goto").value = custodes.local(t);
    goTo(t);
  });
  $("goto-back2").addEventListener("click", () => {
    const t = Date.now() / 1000 - 120;
    $("goto").value = custodes.local(t);
    goTo(t);
  });
  zoomSel.addEventListener("change", () => {
    const centre = playing() ?? detailStart + zoom / 2;
    zoom = Number(zoomSel.value);
    centreDetail(centre);
    draw();
  });

  centreDetail(data.at ?? Math.min(Date.now() / 1000, dayEnd));
  load();
  setInterval(() => {
    const now = Date.now() / 1000;
    if (now >= dayStart && now < dayEnd + 60) load();
  }, 10000);
  setInterval(moveHead, 250);
  if (data.at !== null && data.at !== undefined) playAt(data.at);

  // For the browser tests and for anyone curious: what plays and how fast it started.
  window.custodesPlayer = {
    playAt, playing, goTo, firstFrames, steps, prefetches, video: () => videos[active],
    source: () => videos[active].dataset.url || null,  // the segment's URL (src may be a blob:)
  };
})();
