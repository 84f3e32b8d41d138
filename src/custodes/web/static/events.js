// Events list: filters in the URL, newest first, paged with a cursor.
"use strict";
(() => {
  const { canPlayback } = JSON.parse(document.getElementById("page-data").textContent);
  const form = document.getElementById("filters");
  const rows = document.getElementById("rows");
  const more = document.getElementById("more");
  const msg = document.getElementById("message");
  const el = custodes.el;
  let cursor = null, shown = 0;

  const initial = new URLSearchParams(location.search);
  for (const key of ["camera", "kind"]) if (initial.get(key)) form.elements[key].value = initial.get(key);
  for (const key of ["start", "end"]) {
    const t = Number(initial.get(key));
    if (t) form.elements[key].value = custodes.toInput(t);
  }

  function query() {
    const q = new URLSearchParams();
    for (const key of ["camera", "kind"]) if (form.elements[key].value) q.set(key, form.elements[key].value);
    for (const key of ["start", "end"]) {
      const t = custodes.fromInput(form.elements[key].value);
      if (t !== null) q.set(key, String(t));
    }
    return q;
  }

  function details(e) {
    if (e.kind === "motion") return e.data.peak !== undefined ? `peak ${(100 * e.data.peak).toFixed(1)} % of the frame` : "";
    if (e.kind === "face") {
      const parts = [];
      if (e.data.detections !== undefined) parts.push(`${e.data.detections} detections`);
      if (e.data.quality !== undefined) parts.push(`quality ${Number(e.data.quality).toFixed(2)}`);
      return parts.join(", ");
    }
    return JSON.stringify(e.data);
  }

  function row(e) {
    const thumb = e.snapshot_url
      ? el("a", { href: e.snapshot_url, target: "_blank" },
           el("img", { class: "thumb", src: e.snapshot_url, loading: "lazy", alt: "redacted snapshot",
                       onerror: (ev) => ev.target.replaceWith(el("span", { class: "muted" }, "snapshot not available")) }))
      : el("span", { class: "muted" }, "—");
    const play = canPlayback
      ? el("a", { href: `/timeline?camera=${encodeURIComponent(e.camera)}&at=${Math.floor(e.start - 2)}` }, "play ▸")
      : "";
    return el("tr", { "data-event": e.id },
      el("td", {}, thumb), el("td", { class: "mono" }, custodes.utc(e.start)),
      el("td", {}, e.camera), el("td", { class: "kind-" + e.kind }, e.kind),
      el("td", { class: "num" }, e.end === null ? "ongoing" : custodes.duration(e.end - e.start)),
      el("td", { class: "detail" }, details(e)), el("td", {}, play));
  }

  async function page(reset) {
    const q = query();
    if (!reset && cursor) q.set("before", String(cursor));
    q.set("limit", "50");
    try {
      const r = await custodes.api("GET", "/api/events?" + q);
      if (reset) { rows.replaceChildren(); shown = 0; }
      rows.append(...r.events.map(row));
      shown += r.events.length;
      cursor = r.next;
      more.classList.toggle("hidden", !cursor);
      document.getElementById("count").textContent = shown ? `${shown} shown` : "no events";
      custodes.message(msg, "", "");
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    history.replaceState(null, "", "?" + query());
    page(true);
  });
  more.addEventListener("click", () => page(false));
  page(true);
})();
