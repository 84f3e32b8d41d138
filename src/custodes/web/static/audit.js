// Audit viewer: filtered pages of the log, newest first, and a check of the whole chain.
"use strict";
(() => {
  const el = custodes.el;
  const form = document.getElementById("filters");
  const rows = document.getElementById("rows");
  const msg = document.getElementById("message");
  const PAGE = 100;
  let offset = 0;

  const initial = new URLSearchParams(location.search);
  for (const key of ["actor", "action", "outcome"]) if (initial.get(key)) form.elements[key].value = initial.get(key);
  for (const [key, param] of [["start", "since"], ["end", "until"]]) {
    const t = Number(initial.get(param));
    if (t) form.elements[key].value = custodes.toInput(t);
  }
  offset = Math.max(0, Number(initial.get("offset")) || 0);

  function query() {
    const q = new URLSearchParams();
    for (const key of ["actor", "action", "outcome"]) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    for (const [key, param] of [["start", "since"], ["end", "until"]]) {
      const t = custodes.fromInput(form.elements[key].value);
      if (t !== null) q.set(param, String(t));
    }
    return q;
  }

  function detail(d) {
    const keys = Object.keys(d || {});
    if (!keys.length) return "";
    return keys.map((k) => `${k}=${typeof d[k] === "object" ? JSON.stringify(d[k]) : d[k]}`).join(" · ");
  }

  function row(e) {
    return el("tr", { "data-seq": e.seq },
      el("td", { class: "num mono" }, String(e.seq)), el("td", { class: "mono" }, custodes.utc(e.at)),
      el("td", {}, e.actor), el("td", { class: "mono muted" }, e.address || ""),
      el("td", {}, e.action), el("td", {}, e.target),
      el("td", {}, el("span", { class: "badge " + e.outcome }, e.outcome)),
      el("td", { class: "detail mono", title: JSON.stringify(e.detail) }, detail(e.detail)));
  }

  async function load() {
    const q = query();
    q.set("limit", String(PAGE));
    q.set("offset", String(offset));
    try {
      const r = await custodes.api("GET", "/api/audit?" + q);
      rows.replaceChildren(...r.entries.map(row));
      if (!r.entries.length) rows.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No entries match.")));
      document.getElementById("count").textContent = `${r.total} entries match`;
      document.getElementById("pageinfo").textContent = r.total
        ? `${offset + 1}–${Math.min(offset + PAGE, r.total)} of ${r.total}` : "";
      document.getElementById("newer").classList.toggle("hidden", offset === 0);
      document.getElementById("older").classList.toggle("hidden", offset + PAGE >= r.total);
      const shown = query();
      if (offset) shown.set("offset", String(offset));
      history.replaceState(null, "", "?" + shown);
      custodes.message(msg, "", "");
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
  document.getElementById("newer").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  document.getElementById("older").addEventListener("click", () => { offset += PAGE; load(); });

  const verdict = document.getElementById("verdict");
  document.getElementById("verify").addEventListener("click", async () => {
    verdict.className = "badge busy";
    verdict.textContent = "verifying…";
    try {
      const r = await custodes.api("GET", "/api/audit/verify");
      verdict.className = "badge " + (r.ok ? "ok" : "bad");
      verdict.textContent = (r.ok ? "chain intact: " : "CHAIN BROKEN: ") + r.summary;
      verdict.title = (r.problems || []).map((p) => `#${p.seq} ${p.kind}: ${p.message}`).join("\n");
      load(); // the verification is itself on record
    } catch (err) {
      verdict.className = "badge bad";
      verdict.textContent = err.message;
    }
  });
  load();
})();
