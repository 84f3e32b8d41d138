// Cases, one case (decision, search, alerts) and the gallery: filled from /api/cases and
// /api/gallery. Every refusal is shown with the reason the server gives.
"use strict";
(() => {
  const el = custodes.el;
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const msg = document.getElementById("message");

  // Multipart uploads (photos) with the session's CSRF header; JSON calls use custodes.api.
  async function upload(url, form) {
    const r = await fetch(url, {
      method: "POST", body: form, credentials: "same-origin", cache: "no-store",
      headers: { Accept: "application/json", "X-CSRF-Token": custodes.cookie("custodes_csrf") },
    });
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text; }
    if (!r.ok) {
      let d = body && typeof body === "object" ? body.detail : body;
      if (Array.isArray(d)) d = d.map((e) => (e.loc ? e.loc.slice(1).join(".") + ": " : "") + e.msg).join("; ");
      throw new custodes.ApiError(r.status, d || r.statusText);
    }
    return body;
  }

  const range = (a, b) => custodes.utc(a) + " – " + custodes.utc(b);
  const badge = (status) => el("span", { class: "badge status-" + status + " " + ({
    approved: "ok", pending: "busy", rejected: "bad", closed: "", expired: "", exported: "ok" }[status] || "") }, status);
  const who = (name, t) => name ? el("span", {}, name, el("div", { class: "muted mono" }, custodes.utc(t))) : "—";
  const crop = (url, title) => el("img", { src: url, alt: title, title, class: "crop", loading: "lazy",
    style: "width:72px;height:72px;object-fit:cover;background:#000;border:1px solid var(--line);display:block" });

  // -- the list of cases ------------------------------------------------------------------
  async function listPage() {
    const rows = document.getElementById("rows");
    async function refresh() {
      try {
        const r = await custodes.api("GET", "/api/cases");
        rows.replaceChildren(...r.cases.map((c) => el("tr", { "data-case": c.id },
          el("td", {}, el("a", { href: `/cases/${c.id}` }, `#${c.id}`)),
          el("td", {}, el("a", { href: `/cases/${c.id}` }, c.reference),
             el("div", { class: "muted" }, c.purpose)),
          el("td", {}, badge(c.status), c.watchlist ? el("div", { class: "muted" }, "watchlist") : null),
          el("td", {}, c.cameras.join(", ")),
          el("td", { class: "mono" }, range(c.scope_start, c.scope_end)),
          el("td", {}, who(c.opened_by, c.opened_at)),
          el("td", {}, who(c.decided_by, c.decided_at)),
          el("td", { class: "mono" }, custodes.utc(c.expires_at)))));
        if (!r.cases.length) rows.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No cases.")));
      } catch (err) { custodes.message(msg, err.message, "bad"); }
    }
    const dialog = document.getElementById("dialog");
    if (dialog) {
      const form = document.getElementById("form");
      const dmsg = document.getElementById("c-message");
      document.getElementById("new-case").addEventListener("click", () => {
        const now = Date.now() / 1000;
        form.elements.start.value = custodes.toInput(now - 86400);
        form.elements.end.value = custodes.toInput(now);
        form.elements.expires_at.value = custodes.toInput(now + 7 * 86400);
        custodes.message(dmsg, "", "");
        dialog.showModal();
      });
      document.getElementById("cancel").addEventListener("click", () => dialog.close());
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const f = form.elements;
        const body = new FormData();
        for (const name of ["reference", "legal_basis", "purpose"]) body.append(name, f[name].value);
        for (const o of f.cameras.selectedOptions) body.append("cameras", o.value);
        for (const name of ["start", "end", "expires_at"]) {
          const t = custodes.fromInput(f[name].value);
          if (t === null) { custodes.message(dmsg, `${name.replace("_", " ")}: not a time`, "bad"); return; }
          body.append(name, String(t));
        }
        for (const file of f.photos.files) {
          body.append("photos", file);
          body.append("labels", f.label.value.trim() || "subject 1");
        }
        if (f.watchlist) body.append("watchlist", f.watchlist.checked ? "true" : "false");
        const button = document.getElementById("open");
        button.disabled = true;
        custodes.message(dmsg, "reading the photos…", "busy");
        try {
          const c = await upload("/api/cases", body);
          location.href = `/cases/${c.id}`;
        } catch (err) {
          custodes.message(dmsg, err.message, "bad");
        } finally { button.disabled = false; }
      });
    }
    refresh();
    if (data.can_subject_access) subjectAccess();
  }

  // -- subject access requests (on the list page, for the data-protection officers) --------
  // One officer records a request, a second decides it, then one of the two starts its one
  // export. The page shows each officer what they may do next, and why not where they may
  // not; the API refuses (and audits) the same things whatever the page shows.
  function subjectAccess() {
    const me = data.me;
    const requestRows = document.getElementById("access-requests");
    const exportRows = document.getElementById("access-rows");
    const amsg = document.getElementById("access-message");
    let requests = [];
    let timer = null;

    // Field names as the form labels them, for the API's validation errors.
    const fields = { reference: "Reference", requester: "Requester", identity_check: "Identity checked how",
      identity_checked_by: "Identity checked by", identity_checked_at: "Checked at", camera: "Camera",
      start: "Footage from", end: "Footage to", photo: "Requester's photo" };
    const labelled = (text) => text.split("; ").map((part) =>
      part.replace(/^([a-z_]+): /, (m, name) => fields[name] ? fields[name] + ": " : m)).join("; ");
    const reason = (err) => (err.status === 403 ? "Refused: " : "") + (err.status === 422 ? labelled(err.message) : err.message);
    const both = (r) => [r.recorded_by, r.decided_by].filter(Boolean).join(" and ");

    // What ``me`` may do with a request, or why not.
    function nextStep(r) {
      if (r.status === "pending") {
        if (r.recorded_by === me) return el("span", { class: "muted why" }, "You recorded this request: a second officer must decide it.");
        if (r.identity_checked_by === me) return el("span", { class: "muted why" }, "You checked the requester's identity: a second officer must decide it.");
        return el("button", { type: "button", class: "decide primary", onclick: () => openDecision(r) }, "Decide…");
      }
      if (r.status === "approved") {
        if (r.recorded_by !== me && r.decided_by !== me) {
          return el("span", { class: "muted why" }, `Only ${both(r)}, who answered it, may export it.`);
        }
        const gaps = el("input", { type: "checkbox", class: "gaps" });
        return el("span", { class: "export-step" },
          el("button", { type: "button", class: "export primary", onclick: (e) => startExport(r, gaps.checked, e.target) }, "Start export"),
          el("label", { title: "Export even where the recording has holes" }, gaps, " across gaps"));
      }
      if (r.status === "exported") return el("span", { class: "muted" }, "export ", el("span", { class: "mono" }, r.export_id));
      return el("span", { class: "muted" }, "photo wiped");
    }

    function requestRow(r) {
      return el("tr", { "data-request": r.id, "data-status": r.status },
        el("td", {}, el("b", {}, r.reference), el("div", { class: "muted" }, `#${r.id}`)),
        el("td", {}, r.requester),
        el("td", {}, r.identity_check, el("div", { class: "muted" }, `${r.identity_checked_by} · `,
          el("span", { class: "mono" }, custodes.utc(r.identity_checked_at)))),
        el("td", {}, r.camera, el("div", { class: "mono" }, range(r.start, r.end))),
        el("td", {}, who(r.recorded_by, r.recorded_at)),
        el("td", {}, badge(r.status),
          r.decided_by ? el("div", { class: "muted" }, `by ${r.decided_by} · `, el("span", { class: "mono" }, custodes.utc(r.decided_at))) : null,
          r.decision_note ? el("div", { class: "muted note" }, r.decision_note) : null,
          r.status === "pending" || r.status === "approved"
            ? el("div", { class: "muted" }, "lapses ", el("span", { class: "mono" }, custodes.utc(r.expires_at))) : null),
        el("td", { class: "step" }, nextStep(r)));
    }

    function exportRow(x) {
      const r = requests.find((q) => q.id === x.subject_access.request);
      let get = null;
      if (x.download_url && r && (r.recorded_by === me || r.decided_by === me)) {
        get = el("a", { class: "button download", href: x.download_url, download: "" }, "Download");
      } else if (x.download_url) {
        get = el("span", { class: "muted why" }, r ? `Only ${both(r)} may download it.`
          : "Only the officers who answered its request may download it.");
      }
      return el("tr", { "data-export": x.id },
        el("td", { class: "mono" }, x.id), el("td", {}, x.subject_access.reference),
        el("td", {}, x.camera), el("td", { class: "mono" }, range(x.start, x.end)),
        el("td", {}, x.created_by),
        el("td", {}, el("span", { class: "badge " + x.state, title: x.error || "" }, x.state),
           x.bytes ? el("div", { class: "muted" }, custodes.bytes(x.bytes)) : null,
           x.error ? el("div", { class: "muted" }, x.error) : null),
        el("td", {}, get));
    }

    async function refresh() {
      try {
        const [q, x] = await Promise.all([custodes.api("GET", "/api/subject-access/requests"),
                                          custodes.api("GET", "/api/subject-access")]);
        requests = q.requests;
        requestRows.replaceChildren(...requests.map(requestRow));
        if (!requests.length) requestRows.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No requests yet.")));
        exportRows.replaceChildren(...x.exports.map(exportRow));
        if (!x.exports.length) exportRows.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No exports yet.")));
        clearTimeout(timer);
        if (x.exports.some((e) => e.state === "queued" || e.state === "running")) timer = setTimeout(refresh, 2000);
      } catch (err) { custodes.message(amsg, err.message, "bad"); }
    }

    // 1. Recording a request.
    const dialog = document.getElementById("access-dialog");
    const form = document.getElementById("access-form");
    const rmsg = document.getElementById("a-message");
    document.getElementById("new-access").addEventListener("click", () => {
      const now = Date.now() / 1000;
      const f = form.elements;
      f.identity_checked_at.value = custodes.toInput(now);
      if (!f.start.value) f.start.value = custodes.toInput(now - 600);
      if (!f.end.value) f.end.value = custodes.toInput(now - 540);
      custodes.message(rmsg, "", "");
      dialog.showModal();
    });
    document.getElementById("access-cancel").addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const body = new FormData();
      for (const name of ["reference", "requester", "identity_check", "identity_checked_by", "camera"]) {
        body.append(name, f[name].value.trim());
      }
      for (const name of ["identity_checked_at", "start", "end"]) {
        const t = custodes.fromInput(f[name].value);
        if (t === null) { custodes.message(rmsg, `${fields[name]}: not a time`, "bad"); return; }
        body.append(name, String(t));
      }
      if (f.photo.files.length) body.append("photo", f.photo.files[0]);
      const button = document.getElementById("access-record");
      button.disabled = true;
      custodes.message(rmsg, "reading the photo…", "busy");
      try {
        const r = await upload("/api/subject-access/requests", body);
        dialog.close();
        form.reset();
        custodes.message(amsg, `Request #${r.id} (${r.reference}) recorded: a second officer must now decide it.`, "ok");
        refresh();
      } catch (err) {
        custodes.message(rmsg, reason(err), "bad");
      } finally { button.disabled = false; }
    });

    // 2. Deciding it (a second officer), after comparing the photo with the identity check.
    const decision = document.getElementById("decide-dialog");
    const photo = document.getElementById("d-photo");
    const showPhoto = document.getElementById("d-show-photo");
    const dmsg = document.getElementById("d-message");
    let deciding = null;
    function openDecision(r) {
      deciding = r;
      const row = (k, ...v) => el("tr", {}, el("th", { style: "position:static" }, k), el("td", {}, ...v));
      document.getElementById("d-title").textContent = `Decide request #${r.id}: ${r.reference}`;
      document.getElementById("d-facts").replaceChildren(
        row("requester", r.requester), row("identity check", r.identity_check),
        row("checked by", r.identity_checked_by, " · ", el("span", { class: "mono" }, custodes.utc(r.identity_checked_at))),
        row("camera", r.camera), row("footage", el("span", { class: "mono" }, range(r.start, r.end))),
        row("recorded by", r.recorded_by, " · ", el("span", { class: "mono" }, custodes.utc(r.recorded_at))));
      photo.classList.add("hidden");
      photo.removeAttribute("src");
      showPhoto.classList.toggle("hidden", !r.photo_url);
      document.getElementById("d-note").value = "";
      custodes.message(dmsg, "", "");
      decision.showModal();
    }
    showPhoto.addEventListener("click", () => {
      // Loaded only when asked for: every view of the photo is audited.
      photo.onerror = () => custodes.message(dmsg, "The photo could not be shown (it is shown only while the request is pending).", "bad");
      photo.src = deciding.photo_url + "?t=" + Date.now();
      photo.classList.remove("hidden");
      showPhoto.classList.add("hidden");
    });
    // A biometric photo does not stay in the page after the dialog.
    decision.addEventListener("close", () => { photo.removeAttribute("src"); photo.classList.add("hidden"); });
    document.getElementById("d-cancel").addEventListener("click", () => decision.close());
    async function decide(action) {
      custodes.message(dmsg, "", "");
      try {
        const r = await custodes.api("POST", `/api/subject-access/requests/${deciding.id}/${action}`,
                                     { note: document.getElementById("d-note").value });
        decision.close();
        custodes.message(amsg, action === "approve"
          ? `Request #${r.id} approved: ${r.recorded_by} or you may now start its export.`
          : `Request #${r.id} rejected: its photo is wiped.`, "ok");
        refresh();
      } catch (err) { custodes.message(dmsg, reason(err), "bad"); }
    }
    document.getElementById("d-approve").addEventListener("click", () => decide("approve"));
    document.getElementById("d-reject").addEventListener("click", () => decide("reject"));

    // 3. Its one export (by the recorder or the decider).
    async function startExport(r, allowGaps, button) {
      button.disabled = true;
      custodes.message(amsg, "starting the export…", "busy");
      try {
        const x = await custodes.api("POST", "/api/subject-access", { request: r.id, allow_gaps: allowGaps });
        custodes.message(amsg, `Subject access export ${x.id} started for request #${r.id}; it appears below.`, "ok");
      } catch (err) {
        custodes.message(amsg, reason(err), "bad");
      } finally {
        button.disabled = false;
        refresh();
      }
    }
    refresh();
  }

  // -- one case ---------------------------------------------------------------------------
  async function casePage() {
    const id = data.case_id;
    let current = null;

    function facts(c) {
      const row = (k, v) => el("tr", {}, el("th", { style: "position:static" }, k), el("td", {}, v ?? "—"));
      return [
        row("reference", c.reference), row("legal basis", c.legal_basis), row("purpose", c.purpose),
        row("cameras", c.cameras.join(", ")),
        row("footage", el("span", { class: "mono" }, range(c.scope_start, c.scope_end))),
        row("watchlist", c.watchlist ? "yes: live alerts" : "no"),
        row("opened", el("span", {}, `${c.opened_by} · `, el("span", { class: "mono" }, custodes.utc(c.opened_at)))),
        row("decided", c.decided_by ? el("span", {}, `${c.decided_by} · `, el("span", { class: "mono" }, custodes.utc(c.decided_at))) : "not yet"),
        row("note", c.decision_note), row("expires", el("span", { class: "mono" }, custodes.utc(c.expires_at))),
        row("closed", c.closed_by ? `${c.closed_by} · ${custodes.utc(c.closed_at)}` : null),
        row("footage held", c.holds.length ? `holds ${c.holds.join(", ")}` : null),
      ];
    }

    function subjects(c) {
      const active = c.status === "pending" || c.status === "approved";
      const see = data.can_search || data.can_approve || data.can_alerts;
      return c.subjects.map((s) => el("div", { class: "subject", style: "display:inline-block;margin:0 10px 6px 0;vertical-align:top" },
        active && see && s.crop_url ? crop(s.crop_url, s.label)
          : el("div", { class: "muted", style: "width:72px;height:72px;border:1px dashed var(--line);font-size:11px;padding:4px" },
               s.wiped ? "photo wiped" : "not shown"),
        el("div", {}, s.label), el("div", { class: "muted" }, `#${s.id}`)));
    }

    async function load() {
      try {
        current = await custodes.api("GET", `/api/cases/${id}`);
      } catch (err) { custodes.message(msg, err.message, "bad"); return; }
      const c = current;
      document.getElementById("case-title").textContent = `Case ${c.id}: ${c.reference}`;
      const status = document.getElementById("case-status");
      status.replaceWith(Object.assign(badge(c.status), { id: "case-status" }));
      document.getElementById("facts").replaceChildren(...facts(c));
      document.getElementById("subjects").replaceChildren(...subjects(c));
      const active = c.status === "pending" || c.status === "approved";
      const decide = document.getElementById("decide");
      if (decide) decide.classList.toggle("hidden", c.status !== "pending");
      document.getElementById("close-case").classList.toggle("hidden",
        !active || !(data.can_approve || (data.can_open && c.opened_by === data.me)));
      const search = document.getElementById("search-panel");
      if (search) {
        search.classList.toggle("hidden", c.status !== "approved");
        const boxes = document.getElementById("s-cameras");
        if (!boxes.children.length) {
          boxes.replaceChildren(...c.cameras.map((cam) => el("label", {
            style: "display:inline-flex;flex-direction:row;align-items:center;gap:4px;font-size:13px;color:var(--text)" },
            el("input", { type: "checkbox", name: "camera", value: cam, checked: true }), cam)));
          const f = document.getElementById("search").elements;
          f.start.value = custodes.toInput(c.scope_start);
          f.end.value = custodes.toInput(c.scope_end);
        }
      }
      const alerts = document.getElementById("alerts-panel");
      if (alerts && c.watchlist && c.status === "approved") { alerts.classList.remove("hidden"); loadAlerts(); }
      if (!active) custodes.message(msg, `This case is ${c.status}: its subjects' photos and descriptors are wiped and nothing can be searched.`, "");
    }

    async function decideCase(action) {
      const dmsg = document.getElementById("decide-message");
      custodes.message(dmsg, "", "");
      try {
        await custodes.api("POST", `/api/cases/${id}/${action}`, { note: document.getElementById("note").value });
        custodes.message(msg, action === "approve" ? "Case approved." : "Case rejected.", "ok");
        load();
      } catch (err) { custodes.message(dmsg, "Refused: " + err.message, "bad"); }
    }
    if (document.getElementById("approve")) {
      document.getElementById("approve").addEventListener("click", () => decideCase("approve"));
      document.getElementById("reject").addEventListener("click", () => decideCase("reject"));
    }
    document.getElementById("close-case").addEventListener("click", async () => {
      const note = prompt("Close this case? Its holds are released and its subjects' photos and descriptors wiped.\nNote:", "");
      if (note === null) return;
      try {
        await custodes.api("POST", `/api/cases/${id}/close`, { note });
        custodes.message(msg, "Case closed.", "ok");
        load();
      } catch (err) { custodes.message(msg, "Refused: " + err.message, "bad"); }
    });

    // A match shows its subject and the calibrated sentence; a possible hit is ranked but
    // names nobody (the API sends no subject for it), so its subject cell says so.
    const levelCell = (x) => el("td", { class: "level" },
      el("span", { class: "badge " + (x.level === "match" ? "ok" : "busy"), title: x.meaning }, x.level),
      el("div", { class: "muted", style: "max-width:320px;font-size:11px" }, x.meaning));
    const subjectCell = (x) => el("td", {}, x.subject_crop_url
      ? crop(x.subject_crop_url, `subject ${x.subject_id}`)
      : el("span", { class: "muted" }, "not named"));

    function hitRow(h, n) {
      const shot = h.snapshot_url && data.can_snapshots
        ? el("img", { class: "thumb", src: h.snapshot_url, alt: "redacted snapshot", loading: "lazy" })
        : el("span", { class: "muted" }, h.snapshot_url ? "—" : "no snapshot");
      const play = data.can_timeline ? el("a", { class: "button", href: h.timeline_url }, "Play on timeline") : null;
      return el("tr", { "data-face": h.face_id },
        el("td", { class: "num" }, String(n)), el("td", {}, h.camera),
        el("td", { class: "mono" }, custodes.utc(h.start), el("div", { class: "muted" }, custodes.duration(h.end - h.start))),
        el("td", { class: "num mono" }, h.distance.toFixed(3)), levelCell(h),
        el("td", {}, shot), subjectCell(h),
        el("td", {}, play));
    }

    // Face tracks per camera in the searched window: how many could be compared, and why
    // the others could not.
    function coverageRows(cov) {
      const table = document.getElementById("coverage-table");
      if (!table) return;
      table.classList.toggle("hidden", !cov || !cov.tracks);
      document.getElementById("coverage").replaceChildren(...(cov ? cov.cameras : []).map((c) =>
        el("tr", { "data-camera": c.camera }, el("td", {}, c.camera),
          el("td", { class: "num" }, String(c.tracks)), el("td", { class: "num" }, String(c.searchable)),
          el("td", { class: "num" }, String(c.without_descriptors)),
          el("td", { class: "muted" }, c.reason || "—"))));
    }

    const searchForm = document.getElementById("search");
    if (searchForm) searchForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = searchForm.elements;
      const smsg = document.getElementById("search-message");
      const cameras = [...searchForm.querySelectorAll("input[name=camera]:checked")].map((i) => i.value);
      const body = { cameras, start: custodes.fromInput(f.start.value), end: custodes.fromInput(f.end.value),
                     k: Number(f.k.value) || 20 };
      const button = document.getElementById("search-button");
      button.disabled = true;
      custodes.message(smsg, "searching…", "busy");
      try {
        const r = await custodes.api("POST", `/api/cases/${id}/search`, body);
        document.getElementById("hits").replaceChildren(...r.hits.map((h, i) => hitRow(h, i + 1)));
        document.getElementById("hits-table").classList.toggle("hidden", !r.hits.length);
        const cov = r.coverage;
        document.getElementById("search-count").textContent = `${r.hits.length} hit${r.hits.length === 1 ? "" : "s"} on ${r.cameras.join(", ")}, ${range(r.start, r.end)}; ${cov.searchable} of ${cov.tracks} face track${cov.tracks === 1 ? "" : "s"} searchable`;
        // The server's sentence says what was searched and, when nothing could be, why: an
        // empty list alone would read as "not there" when no face was compared at all.
        custodes.message(smsg, r.summary, { found: cov.without_descriptors ? "busy" : "",
          none_near: "busy", nothing_searchable: "bad", no_tracks: "busy" }[r.outcome] || "busy");
        coverageRows(cov);
      } catch (err) {
        // Nothing of an earlier search stays on screen beside the refusal.
        document.getElementById("hits").replaceChildren();
        document.getElementById("hits-table").classList.add("hidden");
        document.getElementById("search-count").textContent = "";
        coverageRows(null);
        custodes.message(smsg, "Refused: " + err.message, "bad");
      } finally { button.disabled = false; }
    });

    async function loadAlerts() {
      const amsg = document.getElementById("alerts-message");
      try {
        const r = await custodes.api("GET", `/api/cases/${id}/alerts`);
        const decide = (a, action) => async () => {
          try { await custodes.api("POST", `/api/alerts/${a.id}/${action}`); loadAlerts(); }
          catch (err) { custodes.message(amsg, "Refused: " + err.message, "bad"); }
        };
        document.getElementById("alerts").replaceChildren(...r.alerts.map((a) => el("tr", { "data-alert": a.id },
          el("td", {}, `#${a.id}`), el("td", {}, a.camera), el("td", { class: "mono" }, custodes.utc(a.seen_at)),
          el("td", { class: "num mono" }, a.distance.toFixed(3)), levelCell(a),
          subjectCell(a),
          el("td", {}, el("span", { class: "badge " + (a.status === "confirmed" ? "ok" : a.status === "candidate" ? "busy" : "") }, a.status),
             a.decided_by ? el("div", { class: "muted" }, a.decided_by) : null),
          el("td", {}, a.status === "candidate"
            ? el("span", {}, el("button", { type: "button", class: "confirm", onclick: decide(a, "confirm") }, "Confirm"), " ",
                 el("button", { type: "button", class: "dismiss", onclick: decide(a, "dismiss") }, "Dismiss"))
            : null,
            data.can_timeline ? el("a", { href: a.timeline_url, style: "margin-left:6px" }, "play") : null))));
        if (!r.alerts.length) document.getElementById("alerts").append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No alerts.")));
      } catch (err) { custodes.message(amsg, err.message, "bad"); }
    }
    load();
  }

  // -- the gallery ------------------------------------------------------------------------
  async function galleryPage() {
    const people = document.getElementById("people");
    if (!people) return;
    async function refresh() {
      try {
        const r = await custodes.api("GET", "/api/gallery");
        people.replaceChildren(...r.people.map((p) => el("tr", { "data-person": p.id },
          el("td", {}, crop(p.crop_url, p.reference)), el("td", {}, p.reference),
          el("td", {}, `${p.legal_basis.kind} ${p.legal_basis.reference}`), el("td", { class: "num" }, String(p.photos)),
          el("td", {}, who(p.created_by, p.created_at)), el("td", { class: "mono" }, custodes.utc(p.expires_at)),
          el("td", {}, el("button", { type: "button", onclick: async () => {
            if (!confirm(`Delete ${p.reference} and their photos?`)) return;
            try { await custodes.api("DELETE", `/api/gallery/${p.id}`); refresh(); }
            catch (err) { custodes.message(msg, err.message, "bad"); }
          } }, "Delete")))));
        if (!r.people.length) people.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "Nobody is enrolled.")));
      } catch (err) { custodes.message(msg, err.message, "bad"); }
    }
    const dialog = document.getElementById("dialog");
    const form = document.getElementById("form");
    const gmsg = document.getElementById("g-message");
    document.getElementById("new-person").addEventListener("click", () => {
      form.elements.expires_at.value = custodes.toInput(Date.now() / 1000 + 30 * 86400);
      custodes.message(gmsg, "", "");
      dialog.showModal();
    });
    document.getElementById("cancel").addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const body = new FormData();
      for (const name of ["reference", "basis_kind", "basis_reference"]) body.append(name, f[name].value);
      body.append("expires_at", String(custodes.fromInput(f.expires_at.value)));
      for (const file of f.photos.files) body.append("photos", file);
      try {
        await upload("/api/gallery", body);
        dialog.close();
        refresh();
      } catch (err) { custodes.message(gmsg, err.message, "bad"); }
    });
    refresh();
  }

  if (data.case_id) casePage();
  else if (document.getElementById("cases-table")) listPage();
  else galleryPage();
})();
