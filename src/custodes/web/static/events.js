// Events list: filters in the URL, newest first, paged with a cursor; the review queue
// (acknowledge one event, or every event shown) for roles that hold events.acknowledge.
"use strict";
(() => {
  const { canPlayback, canAcknowledge } = JSON.parse(document.getElementById("page-data").textContent);
  const ackAll = document.getElementById("ack-all");
  const shownIds = new Set();
  const form = document.getElementById("filters");
  const rows = document.getElementById("rows");
  const more = document.getElementById("more");
  const msg = document.getElementById("message");
  const el = custodes.el;
  let cursor = null, shown = 0;

  const initial = new URLSearchParams(location.search);
  for (const key of ["camera", "kind"]) if (initial.get(key)) form.elements[key].value = initial.get(key);
  form.elements.unacknowledged.checked = initial.get("unacknowledged") === "true";
  for (const key of ["start", "end"]) {
    const t = Number(initial.get(key));
    if (t) form.elements[key].value = custodes.toInput(t);
  }

  function query() {
    const q = new URLSearchParams();
    for (const key of ["camera", "kind"]) if (form.elements[key].value) q.set(key, form.elements[key].value);
    if (form.elements.unacknowledged.checked) q.set("unacknowledged", "true");
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
      if (e.data.tracks !== undefined) parts.push(`${e.data.tracks} face track${e.data.tracks === 1 ? "" : "s"}`);
      if (e.data.quality !== undefined) parts.push(`quality ${Number(e.data.quality).toFixed(2)}`);
      return parts.join(", ");
    }
    if (e.kind === "camera_offline") return e.data.reason ? `down: ${e.data.reason}` : "down";
    if (e.kind === "camera_online") return e.data.offline_for !== undefined ? `back after ${custodes.duration(e.data.offline_for)}` : "back";
    return JSON.stringify(e.data);
  }

  const ENDED = { max_span: "cut at the longest span; continues in the next event",
                  restart: "closed at the node's restart (its end is unknown)",
                  stop: "closed when recording stopped", stream: "closed when the stream ended",
                  lost: "closed when its analysis process was restarted (its end is unknown)" };
  function duration(e) {
    if (e.end === null) return e.kind === "camera_offline" ? "still offline" : "ongoing";
    const text = custodes.duration(e.end - e.start);
    return ENDED[e.data.ended] ? el("span", { title: ENDED[e.data.ended] }, text + " *") : text;
  }

  function review(e) {
    if (e.acknowledged_at) {
      return el("span", { class: "muted ack" }, `✓ ${e.acknowledged_by} · ${custodes.local(e.acknowledged_at)}`);
    }
    if (!canAcknowledge) return el("span", { class: "muted" }, "not yet");
    return el("button", { type: "button", class: "ack-one", onclick: () => acknowledge([e.id]) }, "Acknowledge");
  }

  async function acknowledge(ids) {
    try {
      const r = await custodes.api("POST", ids.length === 1 ? `/api/events/${ids[0]}/acknowledge` : "/api/events/acknowledge",
                                   ids.length === 1 ? undefined : { ids });
      const by = r.by, at = r.at;
      for (const id of [...r.acknowledged, ...r.already]) {
        const tr = rows.querySelector(`tr[data-event="${id}"]`);
        if (!tr) continue;
        const cell = tr.querySelector("td.review");
        // Someone else's earlier acknowledgement is shown as theirs at the next refresh.
        if (r.acknowledged.includes(id)) cell.replaceChildren(review({ acknowledged_at: at, acknowledged_by: by }));
        else cell.replaceChildren(el("span", { class: "muted" }, "acknowledged before"));
        tr.classList.add("acknowledged");
        shownIds.delete(id);
      }
      if (ackAll) ackAll.classList.toggle("hidden", shownIds.size === 0);
      custodes.message(msg, `${r.acknowledged.length} acknowledged` + (r.already.length ? `, ${r.already.length} were already` : ""), "ok");
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }
  if (ackAll) ackAll.addEventListener("click", () => { if (shownIds.size) acknowledge([...shownIds]); });

  function row(e) {
    const thumb = e.snapshot_url
      ? el("a", { href: e.snapshot_url, target: "_blank" },
           el("img", { class: "thumb", src: e.snapshot_url, loading: "lazy", alt: "redacted snapshot",
                       onerror: (ev) => ev.target.replaceWith(el("span", { class: "muted" }, "snapshot not available")) }))
      : el("span", { class: "muted no-snapshot" }, e.no_snapshot ? "no snapshot: " + e.no_snapshot : "—");
    const play = canPlayback
      ? el("a", { href: `/timeline?camera=${encodeURIComponent(e.camera)}&at=${Math.floor(e.start - 2)}` }, "play ▸")
      : "";
    return el("tr", { "data-event": e.id },
      el("td", {}, thumb), el("td", { class: "mono" }, custodes.local(e.start)),
      el("td", {}, e.camera), el("td", { class: "kind-" + e.kind }, e.kind),
      el("td", { class: "num" }, duration(e)),
      el("td", { class: "detail" }, details(e)), el("td", { class: "review" }, review(e)), el("td", {}, play));
  }

  async function page(reset) {
    const q = query();
    if (!reset && cursor) q.set("before", String(cursor));
    q.set("limit", "50");
    try {
      const r = await custodes.api("GET", "/api/events?" + q);
      if (reset) { rows.replaceChildren(); shown = 0; shownIds.clear(); }
      for (const e of r.events) if (!e.acknowledged_at) shownIds.add(e.id);
      if (ackAll) ackAll.classList.toggle("hidden", shownIds.size === 0);
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
