// Holds (evidence lock) on the timeline: the held ranges of the chosen camera painted on both
// bars, a list of them, and a form to place one (from the detail window by default) or release
// one. The rules are the API's (custodes.record.hold_requests): it refuses and audits the rest.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const { api, el, utc, message, toInput, fromInput } = custodes;
  const cameraSel = $("camera"), msg = $("hold-message");
  const bars = [$("daybar"), $("detailbar")];
  let holds = [];

  // timeline.js redraws a bar by replacing its children (and sets bar.from / bar.to): paint
  // the holds again whenever that happens.
  function paint(bar) {
    if (bar.from === undefined) return;
    bar.querySelectorAll(".held").forEach((e) => e.remove());
    const w = bar.to - bar.from;
    for (const h of holds) {
      if (h.end <= bar.from || h.start >= bar.to) continue;
      const left = Math.max(h.start, bar.from), right = Math.min(h.end, bar.to);
      bar.append(el("div", {
        class: "held", "data-hold": h.id, title: `hold ${h.id}: ${h.reason}`,
        style: `left:${100 * (left - bar.from) / w}%;width:${100 * (right - left) / w}%`,
      }));
    }
  }
  for (const bar of bars) {
    new MutationObserver((changes) => {
      // Our own additions also land here: repaint only after timeline.js replaced the bar.
      const ours = changes.every((c) => [...c.addedNodes, ...c.removedNodes].every((n) => n.classList && n.classList.contains("held")));
      if (!ours) paint(bar);
    }).observe(bar, { childList: true });
  }

  async function load() {
    try {
      holds = await api("GET", `/api/holds?camera=${encodeURIComponent(cameraSel.value)}`);
    } catch (err) { message(msg, "holds: " + err.message, "bad"); return; }
    bars.forEach(paint);
    $("hold-rows").replaceChildren(...holds.map((h) => el("tr", { "data-hold": h.id },
      el("td", { class: "num" }, String(h.id)), el("td", {}, h.camera || "all cameras"),
      el("td", { class: "mono" }, `${utc(h.start)} – ${utc(h.end)}`), el("td", {}, h.reason),
      el("td", {}, h.created_by), el("td", { class: "mono" }, h.expires_at ? utc(h.expires_at) : "until released"),
      el("td", {}, h.case ? el("span", { class: "muted" }, `case ${h.case}: ends with the case`)
        : el("button", { type: "button", "data-release": h.id, onclick: () => release(h) }, "Release…")))));
    if (!holds.length) $("hold-rows").replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No holds in force on this camera.")));
  }

  function useWindow() {
    const d = $("detailbar");
    if (d.from === undefined) return;
    $("hold-start").value = toInput(d.from);
    $("hold-end").value = toInput(Math.min(d.to, Date.now() / 1000));
  }

  async function release(h) {
    const note = prompt(`Release hold ${h.id} (${h.reason})? Its footage falls under retention again. Why?`);
    if (note === null) return;
    try {
      await api("POST", `/api/holds/${h.id}/release`, { note });
      message(msg, `hold ${h.id} released`, "ok");
    } catch (err) { message(msg, err.message, "bad"); }
    load();
  }

  $("hold-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const start = fromInput($("hold-start").value), end = fromInput($("hold-end").value);
    const expires = $("hold-expires").value ? fromInput($("hold-expires").value) : null;
    if (start === null || end === null) { message(msg, "give the start and end of the footage to keep", "bad"); return; }
    try {
      const h = await api("POST", "/api/holds", {
        camera: cameraSel.value, start, end, reason: $("hold-reason").value, expires_at: expires,
      });
      message(msg, `hold ${h.id} placed on ${h.camera}: ${utc(h.start)} – ${utc(h.end)} ${custodes.zone()}`, "ok");
      $("hold-reason").value = "";
    } catch (err) { message(msg, err.message, "bad"); }
    load();
  });
  $("hold-window").addEventListener("click", useWindow);
  cameraSel.addEventListener("change", load);
  // The detail window exists once timeline.js drew it.
  setTimeout(() => { if (!$("hold-start").value) useWindow(); }, 500);
  load();
})();
