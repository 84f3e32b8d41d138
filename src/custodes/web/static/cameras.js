// Cameras: list, add, test, edit, enable/disable and remove (administrator; /api/system/cameras).
"use strict";
(() => {
  const el = custodes.el;
  const api = custodes.api;
  const dialog = document.getElementById("dialog");
  const form = document.getElementById("form");
  const rows = document.getElementById("rows");
  const msg = document.getElementById("message");
  const dmsg = document.getElementById("d-message");
  const testOut = document.getElementById("c-test");
  const base = "/api/system/cameras";
  let info = null;
  let editing = null; // the camera being edited, or null when adding

  function options(select, items, chosen) {
    select.replaceChildren(...items.map(([value, label, disabled]) =>
      el("option", { value, disabled: !!disabled, selected: value === chosen }, label)));
  }

  function open(cam) {
    editing = cam;
    form.reset();
    testOut.replaceChildren();
    custodes.message(dmsg, "", "");
    document.getElementById("d-title").textContent = cam ? `Edit ${cam.name}` : "Add camera";
    form.elements.name.value = cam ? cam.name : "";
    form.elements.name.readOnly = !!cam;
    options(form.elements.site, Object.entries(info.sites).map(([id, name]) => [id, `${name} (${id})`]),
            cam ? cam.site : undefined);
    options(form.elements.location, info.locations.map((l) =>
      [l.value, l.allowed ? l.value : `${l.value} (not allowed in the ${info.profile} profile)`, !l.allowed]),
      cam ? cam.location : info.locations.find((l) => l.allowed)?.value);
    form.elements.purpose.value = cam ? cam.purpose : "";
    form.elements.main_url.value = cam ? cam.main_url : "";
    form.elements.sub_url.value = cam && cam.sub_url ? cam.sub_url : "";
    form.elements.onvif_url.value = cam && cam.onvif_url ? cam.onvif_url : "";
    document.getElementById("c-device").replaceChildren();
    form.elements.username.value = cam && cam.username ? cam.username : "";
    // Never shown back: an empty field keeps the configured password.
    form.elements.password.placeholder = cam && cam.password_set ? "unchanged (set)" : "";
    form.elements.enabled.checked = cam ? cam.enabled : true;
    dialog.showModal();
  }

  function body() {
    const f = form.elements;
    const b = { site: f.site.value, location: f.location.value, purpose: f.purpose.value,
                main_url: f.main_url.value.trim(), sub_url: f.sub_url.value.trim() || null,
                onvif_url: f.onvif_url.value.trim() || null,
                username: f.username.value.trim() || null, enabled: f.enabled.checked };
    if (f.password.value) b.password = f.password.value;
    return b;
  }

  async function test() {
    const b = body();
    const t = { main_url: b.main_url, sub_url: b.sub_url, username: b.username };
    if (b.password) t.password = b.password;
    if (editing) t.camera = editing.name;
    testOut.replaceChildren(el("span", { class: "badge busy" }, "connecting…"));
    try {
      const r = await api("POST", `${base}/test`, t);
      const line = (name, s) => el("div", { class: "stream-facts", "data-stream": name },
        `${name}: ${s.codec} ${s.width}×${s.height}` + (s.fps ? ` at ${s.fps} fps` : ""));
      testOut.replaceChildren(line("main", r.main), r.sub ? line("sub", r.sub) : "",
        el("img", { id: "preview", src: r.preview, alt: "redacted preview", style: "max-width:100%" }),
        el("div", { class: "muted" }, "Faces and privacy zones are blurred in this picture."));
    } catch (err) {
      testOut.replaceChildren(el("span", { class: "badge bad" }, err.message));
    }
  }

  // ONVIF (custodes.cameras): what the device says it is, and its stream URIs for the form.
  async function readOnvif() {
    const f = form.elements;
    const out = document.getElementById("c-device");
    const b = { url: f.onvif_url.value.trim(), username: f.username.value.trim() || null };
    if (f.password.value) b.password = f.password.value;
    if (editing) b.camera = editing.name;
    out.replaceChildren(el("span", { class: "badge busy" }, "asking the device…"));
    try {
      const r = await api("POST", `${base}/onvif`, b);
      const d = r.device;
      for (const s of r.streams) {
        if (s.role === "main") f.main_url.value = s.uri;
        if (s.role === "sub") f.sub_url.value = s.uri;
      }
      out.replaceChildren(
        d ? el("div", { id: "c-device-info" }, `${d.manufacturer} ${d.model}, firmware ${d.firmware}, serial ${d.serial}`) : "",
        r.error ? el("div", { class: "badge bad" }, r.error) : "",
        ...r.findings.map((x) => el("div", { class: "finding " + x.severity }, `${x.severity}: ${x.message}`)));
    } catch (err) {
      out.replaceChildren(el("span", { class: "badge bad" }, err.message));
    }
  }

  async function find() {
    const hosts = document.getElementById("find-hosts").value.split(/[\s,]+/).filter(Boolean);
    custodes.message(msg, "looking for ONVIF devices…", "busy");
    try {
      const r = await api("POST", `${base}/discover`, { hosts, multicast: !hosts.length });
      const rows = document.getElementById("found");
      rows.replaceChildren(...r.devices.map((d) => el("tr", { "data-found": d.address },
        el("td", { class: "mono" }, d.address), el("td", {}, d.name || "—"), el("td", {}, d.hardware || "—"),
        el("td", { class: "mono" }, d.xaddrs.join(" ")),
        el("td", {}, el("button", { type: "button", class: "use", onclick: () => {
          open(null);
          form.elements.onvif_url.value = d.xaddrs[0] || "";
        } }, "Add…")))));
      document.getElementById("found-table").classList.toggle("hidden", !r.devices.length);
      custodes.message(msg, `${r.devices.length} device(s) answered`, r.devices.length ? "ok" : "");
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }

  async function act(promise, done) {
    custodes.message(msg, "", "");
    try {
      const r = await promise;
      custodes.message(msg, done, "ok");
      await refresh();
      return r;
    } catch (err) {
      custodes.message(msg, err.message, "bad");
      return null;
    }
  }

  function row(c) {
    const toggle = el("button", { type: "button", class: "toggle", onclick: () =>
      act(api("POST", `${base}/${c.name}/enabled`, { enabled: !c.enabled }),
          `${c.name} ${c.enabled ? "disabled" : "enabled"}`) }, c.enabled ? "Disable" : "Enable");
    const remove = el("button", { type: "button", class: "remove", onclick: () => {
      if (confirm(`Remove ${c.name}? Its footage stays until retention deletes it.`)) {
        act(api("DELETE", `${base}/${c.name}`), `${c.name} removed`);
      }
    } }, "Remove");
    const edit = el("button", { type: "button", class: "edit", onclick: () => open(c) }, "Edit");
    for (const b of [toggle, remove, edit]) b.disabled = !info.editable;
    return el("tr", { "data-camera": c.name },
      el("td", {}, el("b", {}, c.name)), el("td", {}, c.site), el("td", {}, c.location),
      el("td", {}, c.purpose), el("td", { class: "mono" }, c.main_url),
      el("td", { class: "mono" }, c.sub_url || "—"),
      el("td", {}, el("span", { class: "badge " + c.state, title: c.reason }, c.enabled ? c.state : "disabled")),
      el("td", {}, edit, " ", toggle, " ", remove));
  }

  async function refresh() {
    try {
      info = await api("GET", base);
      rows.replaceChildren(...info.cameras.map(row));
      if (!info.cameras.length) rows.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No cameras.")));
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const save = document.getElementById("save");
    save.disabled = true;
    custodes.message(dmsg, "saving…", "busy");
    try {
      const b = body();
      if (editing) await api("PUT", `${base}/${editing.name}`, b);
      else await api("POST", base, { name: form.elements.name.value.trim(), ...b });
      dialog.close();
      custodes.message(msg, `${editing ? editing.name : form.elements.name.value} saved and applied`, "ok");
      await refresh();
    } catch (err) {
      custodes.message(dmsg, err.message, "bad");
    } finally {
      save.disabled = false;
    }
  });
  document.getElementById("test").addEventListener("click", test);
  document.getElementById("onvif-read").addEventListener("click", readOnvif);
  document.getElementById("find").addEventListener("click", find);
  document.getElementById("cancel").addEventListener("click", () => dialog.close());
  document.getElementById("add").addEventListener("click", () => open(null));
  refresh();
  setInterval(refresh, 5000);
})();
