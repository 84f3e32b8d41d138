// Exports: create a signed bundle, follow it until ready, download it, check its signature.
"use strict";
(() => {
  const el = custodes.el;
  const dialog = document.getElementById("dialog");
  const form = document.getElementById("form");
  const rows = document.getElementById("rows");
  const msg = document.getElementById("message");
  const dmsg = document.getElementById("x-message");
  const verified = new Map(); // export id -> last verification result (kept across refreshes)

  function open(camera, start, end) {
    if (camera) form.elements.camera.value = camera;
    const now = Date.now() / 1000;
    form.elements.start.value = custodes.toInput(start ?? now - 120);
    form.elements.end.value = custodes.toInput(end ?? now - 60);
    custodes.message(dmsg, "", "");
    dialog.showModal();
  }

  function verification(x) {
    const v = verified.get(x.id);
    if (!v) return el("span", { class: "muted" }, "—");
    if (v.error) return el("span", { class: "badge bad" }, v.error);
    return el("span", { class: "badge " + (v.ok ? "ok" : "bad"), title: (v.problems || []).join("\n") },
              v.ok ? "signature and checksums valid" : "INVALID: " + (v.problems || []).join("; "));
  }

  async function verify(x, cell) {
    cell.replaceChildren(el("span", { class: "badge busy" }, "checking…"));
    try {
      verified.set(x.id, await custodes.api("GET", `/api/exports/${x.id}/verify`));
    } catch (err) {
      verified.set(x.id, { error: err.message });
    }
    cell.replaceChildren(verification(x));
  }

  function row(x) {
    const vcell = el("td", { class: "verify" }, verification(x));
    const actions = x.state === "done"
      ? el("td", {}, el("a", { class: "button download", href: `/api/exports/${x.id}/download`, download: "" }, "Download"),
           " ", el("button", { type: "button", class: "check", onclick: () => verify(x, vcell) }, "Verify"))
      : el("td", {});
    return el("tr", { "data-export": x.id },
      el("td", { class: "mono" }, x.id), el("td", {}, x.camera),
      el("td", { class: "mono" }, custodes.utc(x.start) + " – " + custodes.utc(x.end, false)),
      el("td", {}, x.redacted ? "redacted" : el("b", {}, "unredacted")),
      el("td", {}, x.case || "—"), el("td", {}, x.created_by),
      el("td", { class: "mono" }, custodes.utc(x.created_at)),
      el("td", {}, el("span", { class: "badge " + x.state, title: x.error || "" }, x.state),
         x.error ? el("div", { class: "muted" }, x.error) : null),
      el("td", { class: "num" }, x.bytes ? custodes.bytes(x.bytes) : "—"),
      actions, vcell);
  }

  let timer = null;
  async function refresh() {
    try {
      const r = await custodes.api("GET", "/api/exports");
      rows.replaceChildren(...r.exports.map(row));
      if (!r.exports.length) rows.append(el("tr", {}, el("td", { colspan: "11", class: "muted" }, "No exports yet.")));
      clearTimeout(timer);
      if (r.exports.some((x) => x.state === "running")) timer = setTimeout(refresh, 1000);
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const start = custodes.fromInput(form.elements.start.value);
    const end = custodes.fromInput(form.elements.end.value);
    const body = { camera: form.elements.camera.value, start, end,
                   redact: form.elements.redact.checked };
    if (form.elements.case.value.trim()) body.case = form.elements.case.value.trim();
    const button = document.getElementById("create");
    button.disabled = true;
    custodes.message(dmsg, "starting…", "busy");
    try {
      const x = await custodes.api("POST", "/api/exports", body);
      dialog.close();
      custodes.message(msg, `Export ${x.id} started.`, "ok");
      refresh();
    } catch (err) {
      custodes.message(dmsg, err.message, "bad");
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("new").addEventListener("click", () => open());
  document.getElementById("cancel").addEventListener("click", () => dialog.close());

  const q = new URLSearchParams(location.search);
  if (q.get("camera")) open(q.get("camera"), Number(q.get("start")) || null, Number(q.get("end")) || null);
  refresh();
})();
