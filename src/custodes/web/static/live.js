// Live grid: each visible tile polls its camera's newest redacted picture and shows its age.
"use strict";
(() => {
  const { cameras, canPlayback } = JSON.parse(document.getElementById("page-data").textContent);
  const grid = document.getElementById("grid");
  const params = new URLSearchParams(location.search);
  let layout = [1, 4, 9].includes(Number(params.get("layout"))) ? Number(params.get("layout")) : 4;
  let first = Math.max(0, Number(params.get("from")) || 0);
  let generation = 0; // bumps on every re-layout: old tile loops stop

  function remember() {
    const p = new URLSearchParams({ layout: String(layout), from: String(first) });
    history.replaceState(null, "", "?" + p);
  }

  function tile(cam, gen) {
    const img = custodes.el("img", { alt: "live picture of " + cam.name });
    const badge = custodes.el("span", { class: "badge " + cam.state }, cam.state);
    const latency = custodes.el("span", { class: "latency hidden" });
    const note = custodes.el("div", { class: "note" }, "connecting…");
    const box = custodes.el("div", { class: "tile", "data-camera": cam.name,
      title: canPlayback ? "Click: this camera alone · double-click: its timeline" : "" },
      img, note,
      custodes.el("div", { class: "label" },
        custodes.el("span", { class: "name" }, cam.name),
        custodes.el("span", { class: "where" }, cam.location + " · " + cam.site), badge),
      latency);
    box.addEventListener("click", () => {
      if (layout === 1) return;
      first = cameras.indexOf(cam); layout = 1; render();
    });
    if (canPlayback) box.addEventListener("dblclick", () => {
      location.href = "/timeline?camera=" + encodeURIComponent(cam.name);
    });
    box.badge = badge;
    let url = null;
    let frames = 0;
    let last = 0; // capture time of the picture shown
    async function loop() {
      while (gen === generation) {
        if (document.hidden) { await sleep(500); continue; }
        try {
          // "after": the server answers as soon as a newer picture exists (or after 2 s), so
          // asking again at once gets each picture when it is made, without busy polling.
          const q = last ? "?after=" + last.toFixed(3) : "";
          const r = await fetch(`/api/cameras/${encodeURIComponent(cam.name)}/live.jpg${q}`,
                                { cache: "no-store", credentials: "same-origin" });
          const arrived = performance.now();
          if (r.status === 401) { location.href = "/login"; return; }
          if (!r.ok) {
            let why = r.statusText;
            try { why = (await r.json()).detail || why; } catch { /* not JSON */ }
            note.textContent = why; note.classList.remove("hidden");
            latency.classList.add("hidden");
            last = 0;
            await sleep(1000);
            continue;
          }
          const capture = Number(r.headers.get("X-Capture-Time") || "0");
          const blob = await r.blob();
          if (capture <= last) continue; // no newer picture within the wait: ask again
          const next = URL.createObjectURL(blob);
          img.src = next;
          try { await img.decode(); } catch { /* shown anyway */ }
          if (url) URL.revokeObjectURL(url);
          url = next;
          last = capture;
          frames += 1;
          // Age when shown = age when sent (server clock) + body transfer and decode (ours),
          // so the two clocks need not agree. (The time the server waited for the picture
          // is before it was sent and not part of its age.)
          const served = Number(r.headers.get("X-Frame-Age") || "0");
          const age = served + (performance.now() - arrived) / 1000;
          img.dataset.capture = String(capture);
          img.dataset.frames = String(frames);
          img.dataset.served = served.toFixed(3);
          img.dataset.latency = age.toFixed(3);
          latency.textContent = (age * 1000).toFixed(0) + " ms";
          latency.title = `taken ${custodes.utc(capture)} UTC; ${(served * 1000).toFixed(0)} ms old when sent`;
          latency.classList.remove("hidden");
          latency.style.color = age > 1 ? "var(--warn)" : "";
          note.classList.add("hidden");
        } catch (err) {
          note.textContent = "no connection to the recorder"; note.classList.remove("hidden");
          await sleep(1000);
          continue;
        }
        await sleep(20);
      }
      if (url) URL.revokeObjectURL(url);
    }
    loop();
    return box;
  }

  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

  function render() {
    generation += 1;
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
