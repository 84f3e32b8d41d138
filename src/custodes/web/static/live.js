// Live grid: each visible tile shows its camera live and says what it shows and its state
// (live, starting, server busy, camera down, no permission):
// - roles allowed originals: the camera's own video by stream copy (live_stream.js), the sub
//   stream in the grid, the main stream in single view;
// - everyone else: the camera's newest redacted picture, polled, with its age.
// Single view has fullscreen and digital zoom (wheel or pinch, drag to pan).
"use strict";
(() => {
  const { cameras, canPlayback, liveOriginal } =
    JSON.parse(document.getElementById("page-data").textContent);
  const grid = document.getElementById("grid");
  const params = new URLSearchParams(location.search);
  let layout = [1, 4, 9].includes(Number(params.get("layout"))) ? Number(params.get("layout")) : 4;
  let first = Math.max(0, Number(params.get("from")) || 0);
  let generation = 0; // bumps on every re-layout: old tile loops stop
  let players = []; // the video tiles' players, closed on every re-layout

  function remember() {
    const p = new URLSearchParams({ layout: String(layout), from: String(first) });
    history.replaceState(null, "", "?" + p);
  }

  // What a tile says besides its picture (the server's X-Live-State, and the client's own).
  const STATES = {
    live: "live", starting: "starting", busy: "server busy", down: "camera down",
    forbidden: "no permission", offline: "no connection to the recorder",
  };

  function tile(cam, gen, original = liveOriginal) {
    const video = original ? custodes.el("video", { muted: true, playsinline: true,
      "aria-label": "live video of " + cam.name }) : null;
    const img = custodes.el("img", { alt: "live picture of " + cam.name,
                                     class: video ? "hidden" : null });
    const shows = custodes.el("span", { class: "shows" }, video ? "original video" : "redacted picture");
    const full = custodes.el("button", { type: "button", class: "full", title: "Fullscreen" }, "⛶");
    const badge = custodes.el("span", { class: "badge " + cam.state }, cam.state);
    const latency = custodes.el("span", { class: "latency hidden" });
    const state = custodes.el("span", { class: "state" }, "connecting…");
    const note = custodes.el("div", { class: "note" }, "connecting…");
    const box = custodes.el("div", { class: "tile", "data-camera": cam.name,
      "data-state": "starting",
      title: canPlayback ? "Click: this camera alone · double-click: its timeline" : "" },
      video, img, note,
      custodes.el("div", { class: "label" },
        custodes.el("span", { class: "name" }, cam.name),
        custodes.el("span", { class: "where" }, cam.location + " · " + cam.site), shows, badge,
        layout === 1 ? full : null),
      state, latency);
    box.dataset.shows = video ? "original" : "redacted";
    const zoom = liveStream.zoomable(box, video || img, () => layout === 1);
    full.addEventListener("click", (e) => { e.stopPropagation(); liveStream.fullscreen(box); });
    box.addEventListener("click", () => {
      if (layout === 1) return;
      first = cameras.indexOf(cam); layout = 1; render();
    });
    if (canPlayback) box.addEventListener("dblclick", () => {
      location.href = "/timeline?camera=" + encodeURIComponent(cam.name);
    });
    box.badge = badge;
    if (video) {
      playVideo();
      return box;
    }
    let url = null;
    let frames = 0;
    let last = 0; // capture time of the picture shown
    let served = 0, arrived = 0; // its age when sent, and when it arrived (our clock)
    let fps = "";

    // The tile's state: a picture that stops coming stays on screen, dimmed, with its age and
    // the reason, rather than the tile going dark while its badge says online.
    function say(kind, why, fresh) {
      box.dataset.state = kind;
      box.classList.toggle("stale", !fresh || kind === "down"); // down: the last one it sent
      const words = STATES[kind] || kind;
      let text = why && !why.startsWith(words) ? `${words}: ${why}` : (why || words);
      if (fresh && fps && kind === "live") text += ` · ${fps}/s`; // busy says its rate itself
      state.textContent = text;
      state.title = why || "";
      if (!last) {
        note.textContent = state.textContent; note.classList.remove("hidden");
      }
    }

    // Age of the picture on screen, now: its age when sent (server clock) plus the time since
    // it arrived (ours), so the two clocks need not agree.
    function age() { return served + (performance.now() - arrived) / 1000; }
    function showAge() {
      if (!last) return;
      const a = age();
      img.dataset.age = a.toFixed(3);
      latency.textContent = a < 10 ? (a * 1000).toFixed(0) + " ms" : a.toFixed(0) + " s old";
      latency.style.color = a > 1 ? "var(--warn)" : "";
    }
    const ticker = setInterval(() => {
      if (gen !== generation) clearInterval(ticker); else showAge();
    }, 250);

    async function loop() {
      while (gen === generation) {
        if (document.hidden) { await sleep(500); continue; }
        try {
          // "after": the server answers as soon as a newer picture exists (or after 2 s), so
          // asking again at once gets each picture when it is made, without busy polling.
          // "width": pictures no wider than the tile (the server searches each for faces, at
          // a cost that grows with its pixels).
          const width = Math.round(box.clientWidth * (window.devicePixelRatio || 1));
          const q = new URLSearchParams({ width: String(Math.max(1, width)) });
          if (last) q.set("after", last.toFixed(3));
          const r = await fetch(`/api/cameras/${encodeURIComponent(cam.name)}/live.jpg?${q}`,
                                { cache: "no-store", credentials: "same-origin" });
          const got = performance.now();
          if (r.status === 401) { location.href = "/login"; return; }
          if (r.status === 403) {
            // What the viewer may no longer see is taken off the screen, not left dimmed.
            if (url) { img.removeAttribute("src"); URL.revokeObjectURL(url); url = null; }
            last = 0; latency.classList.add("hidden");
            say("forbidden", "you may not watch this camera", false);
            await sleep(10000); // a role or camera grant may change; no need to ask often
            continue;
          }
          if (!r.ok) {
            let why = r.statusText;
            try { why = (await r.json()).detail || why; } catch { /* not JSON */ }
            say(r.headers.get("X-Live-State") || "starting",
                why.replace(/^no live picture yet: /, ""), false);
            await sleep(1000);
            continue;
          }
          const capture = Number(r.headers.get("X-Capture-Time") || "0");
          fps = r.headers.get("X-Live-Fps") || "";
          const blob = await r.blob();
          say(r.headers.get("X-Live-State") || "live", r.headers.get("X-Live-Detail") || "", true);
          if (capture <= last) continue; // no newer picture within the wait: ask again
          const next = URL.createObjectURL(blob);
          img.src = next;
          try { await img.decode(); } catch { /* shown anyway */ }
          if (url) URL.revokeObjectURL(url);
          url = next;
          last = capture;
          frames += 1;
          served = Number(r.headers.get("X-Frame-Age") || "0");
          arrived = got;
          const shown = age(); // body transfer and decode included
          img.dataset.capture = String(capture);
          img.dataset.frames = String(frames);
          img.dataset.served = served.toFixed(3);
          img.dataset.latency = shown.toFixed(3);
          latency.title = `taken ${custodes.local(capture)} ${custodes.zone()}; ${(served * 1000).toFixed(0)} ms old when sent`;
          latency.classList.remove("hidden");
          showAge();
          note.classList.add("hidden");
        } catch (err) {
          say("offline", "", false);
          await sleep(1000);
          continue;
        }
        await sleep(20);
      }
      clearInterval(ticker);
      if (url) URL.revokeObjectURL(url);
    }
    loop();
    return box;

    // The camera's own video. A browser that cannot play its codec (H.265 in most) gets the
    // redacted pictures instead, and the tile says so.
    function playVideo() {
      let lastAge = null;
      const player = liveStream.play(video, cam.name, layout === 1 ? "main" : "sub", {
        state(kind, why) {
          const playing = Number(video.dataset.frames || 0) > 0;
          box.dataset.state = kind;
          box.classList.toggle("stale", kind !== "live");
          const words = STATES[kind] || kind;
          state.textContent = why && !why.startsWith(words) ? `${words}: ${why}` : (why || words);
          state.title = why || "";
          note.textContent = state.textContent;
          note.classList.toggle("hidden", kind === "live" || (playing && kind !== "forbidden"));
          if (kind === "forbidden") video.classList.add("hidden");
          else video.classList.remove("hidden");
        },
        unsupported(mime) {
          players = players.filter((p) => p !== player);
          video.remove();
          zoom.reset();
          box.replaceWith(fallback(cam, gen, `this browser cannot play ${mime}`));
        },
        signin() { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); },
      });
      players.push(player);
      // The age of the frame on screen (see live_stream.js), shown as the picture tiles do.
      const ticker = setInterval(() => {
        if (gen !== generation) { clearInterval(ticker); return; }
        const a = video.dataset.latency;
        if (a === undefined || a === lastAge) return;
        lastAge = a;
        latency.textContent = (Number(a) * 1000).toFixed(0) + " ms";
        latency.style.color = Number(a) > 1 ? "var(--warn)" : "";
        latency.classList.remove("hidden");
      }, 500);
    }
  }

  // A redacted picture tile for an original-allowed viewer whose browser cannot play the
  // camera's video.
  function fallback(cam, gen, why) {
    const box = tile(cam, gen, false);
    box.querySelector(".shows").title = why;
    return box;
  }

  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

  function render() {
    generation += 1;
    for (const p of players) p.close();
    players = [];
    if (first >= cameras.length) first = 0;
    first = Math.floor(first / layout) * layout;
    grid.className = "grid n" + layout;
    const shown = cameras.slice(first, first + layout);
    const tiles = shown.map((cam) => tile(cam, generation));
    // Empty slots keep the grid's shape: 2 cameras in a 4-grid are not stretched.
    while (tiles.length < layout) {
      tiles.push(custodes.el("div", { class: "tile empty" },
                             custodes.el("div", { class: "note" }, "no camera")));
    }
    grid.replaceChildren(...tiles);
    for (const b of document.querySelectorAll("[data-layout]")) {
      b.classList.toggle("on", Number(b.dataset.layout) === layout);
    }
    const pages = Math.max(1, Math.ceil(cameras.length / layout));
    document.getElementById("pageinfo").textContent =
      `${Math.floor(first / layout) + 1} / ${pages}`;
    document.getElementById("prev").disabled = first === 0;
    document.getElementById("next").disabled = first + layout >= cameras.length;
    remember();
  }

  for (const b of document.querySelectorAll("[data-layout]")) {
    b.addEventListener("click", () => { layout = Number(b.dataset.layout); render(); });
  }
  document.getElementById("prev").addEventListener("click", () => {
    first = Math.max(0, first - layout); render();
  });
  document.getElementById("next").addEventListener("click", () => { first += layout; render(); });

  // Health badges follow the recorder's view of each camera.
  async function health() {
    try {
      const list = await custodes.api("GET", "/api/cameras");
      const byName = new Map(list.cameras.map((c) => [c.name, c]));
      for (const t of grid.querySelectorAll(".tile[data-camera]")) {
        const c = byName.get(t.dataset.camera);
        if (!c || !t.badge) continue;
        t.badge.className = "badge " + c.state;
        t.badge.textContent = c.state;
        t.badge.title = c.reason || "";
      }
    } catch { /* the next round will tell */ }
  }
  render();
  setInterval(health, 5000);
})();
