// Users and grants (administrators): every change goes through /api/users and /api/grants,
// whose rules (two-person rule, nobody changes their own role) refuse what the page would not
// stop; the page only says in advance what will wait for a second administrator.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const $ = (id) => document.getElementById(id);
  const { api, el, utc, message } = custodes;
  const msg = $("message");
  const enc = encodeURIComponent;

  function showSecret(user, value) {
    $("secret-user").textContent = user;
    $("secret-value").textContent = value;
    $("secret").classList.remove("hidden");
  }
  $("secret-done").addEventListener("click", () => {
    $("secret-value").textContent = "";
    $("secret").classList.add("hidden");
  });

  // A 202 is a grant waiting for a second administrator; anything with a password shows it once.
  function answered(name, r, done) {
    if (r && r.grant && r.grant.status === "pending") {
      message(msg, `${r.detail} (${r.grant.kind} ${r.grant.user} as ${r.grant.role}): ` +
              "another administrator confirms it on the Grants page", "busy");
    } else {
      message(msg, done, "ok");
    }
    if (r && r.password) showSecret(name, r.password);
  }

  // -- camera pickers: "all cameras", or some ------------------------------------------------
  function cameraPicker(box) {
    const all = box.querySelector("input[data-all]");
    const each = [...box.querySelectorAll("input[value]")];
    // Unticking "all" leaves every camera ticked: the administrator unticks those to leave out.
    all.addEventListener("change", () => each.forEach((c) => { c.disabled = all.checked; c.checked = true; }));
    return {
      get() { return all.checked ? null : each.filter((c) => c.checked).map((c) => c.value); },
      set(cams) {
        all.checked = cams === null;
        each.forEach((c) => { c.disabled = cams === null; c.checked = cams === null || cams.includes(c.value); });
      },
    };
  }
  const roleWords = Object.fromEntries((data.roles || []).map((r) => [r.role, r]));
  function describeRole(select, target) {
    const show = () => {
      const r = roleWords[select.value];
      target.textContent = r ? r.words + (r.privileged ? " — takes effect when a second administrator confirms it" : "") : "";
    };
    select.addEventListener("change", show);
    show();
    return show;
  }

  // -- users page ----------------------------------------------------------------------------
  async function loadUsers() {
    let users, pending;
    try {
      [users, pending] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/grants?pending=true")]);
    } catch (err) { message(msg, "users: " + err.message, "bad"); return; }
    $("pending-count").textContent = String(pending.length);
    $("pending-count").className = "badge " + (pending.length ? "busy" : "ok");
    $("user-rows").replaceChildren(...users.map((u) => {
      const me = u.name === data.me;
      const waiting = pending.filter((g) => g.user === u.name).map((g) => `${g.kind} → ${g.role}`);
      const actions = el("td", { class: "actions" },
        el("button", { type: "button", "data-edit": u.name, onclick: () => edit(u) }, "Change…"), " ",
        el("button", { type: "button", "data-toggle": u.name, onclick: () => toggle(u) },
           u.disabled ? "Enable" : "Disable"), " ",
        el("button", { type: "button", "data-reset": u.name, disabled: me,
                       title: me ? "change your own password on your account page" : null,
                       onclick: () => reset(u) }, "Reset password"));
      return el("tr", { "data-user": u.name },
        el("td", {}, el("b", {}, u.name), me ? el("span", { class: "muted" }, " (you)") : null),
        el("td", {}, el("span", { class: "role" }, u.role),
           waiting.length ? el("a", { class: "muted", href: "/users/grants?status=pending&user=" + enc(u.name) },
                               " waiting: " + waiting.join(", ")) : null),
        el("td", {}, u.cameras === null ? "all" : u.cameras.join(", ") || "none"),
        el("td", {}, el("span", { class: "badge " + (u.disabled ? "offline" : "ok") }, u.disabled ? "disabled" : "enabled")),
        el("td", {}, u.must_change_password ? el("span", { class: "badge busy" }, "must change") : "set by the user"),
        el("td", { class: "mono" }, utc(u.created_at)),
        actions);
    }));
  }

  let editing = null, editPicker = null, showEditWords = null;
  function edit(u) {
    editing = u;
    $("edit-name").textContent = u.name;
    const role = $("edit-role");
    role.value = u.role;
    // The API refuses it too; the page says so before anyone tries.
    role.disabled = u.name === data.me;
    role.title = role.disabled ? "nobody may change their own role" : "";
    editPicker.set(u.cameras);
    showEditWords();
    $("edit-form").classList.remove("hidden");
  }

  async function toggle(u) {
    try {
      await api("PATCH", `/api/users/${enc(u.name)}`, { disabled: !u.disabled });
      message(msg, `${u.name} ${u.disabled ? "enabled" : "disabled (signed out everywhere)"}`, "ok");
    } catch (err) { message(msg, err.message, "bad"); }
    loadUsers();
  }

  async function reset(u) {
    if (!confirm(`Give ${u.name} a new random password? Their sessions and API tokens end now.`)) return;
    try {
      const r = await api("POST", `/api/users/${enc(u.name)}/password`);
      answered(u.name, r, `${u.name} has a new password; they must change it when they sign in`);
    } catch (err) { message(msg, err.message, "bad"); }
    loadUsers();
  }

  function usersPage() {
    const addPicker = cameraPicker($("add-cameras"));
    editPicker = cameraPicker($("edit-cameras"));
    describeRole($("add-role"), $("add-role-words"));
    showEditWords = describeRole($("edit-role"), $("edit-role-words"));
    $("add-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target;
      const name = f.elements.name.value.trim();
      try {
        const r = await api("POST", "/api/users", { name, role: f.elements.role.value, cameras: addPicker.get() });
        answered(name, r, `${name} added`);
        f.reset(); addPicker.set(null); $("add-role").dispatchEvent(new Event("change"));
      } catch (err) { message(msg, err.message, "bad"); }
      loadUsers();
    });
    $("edit-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!editing) return;
      const body = { cameras: editPicker.get() };
      const role = $("edit-role");
      if (!role.disabled && role.value !== editing.role) body.role = role.value;
      try {
        const r = await api("PATCH", `/api/users/${enc(editing.name)}`, body);
        answered(editing.name, r, `${editing.name} changed`);
        $("edit-form").classList.add("hidden");
      } catch (err) { message(msg, err.message, "bad"); }
      loadUsers();
    });
    $("edit-cancel").addEventListener("click", () => $("edit-form").classList.add("hidden"));
    loadUsers();
  }

  // -- grants page ---------------------------------------------------------------------------
  // The filter lives in the URL (/users/grants?user=ivan), so the users page can link to one
  // user's grants; the API narrows the list (GET /api/grants?user=&camera=&kind=&status=).
  const FILTERS = ["user", "camera", "kind", "status"];
  const filters = $("grant-filters");
  function grantQuery() {
    const q = new URLSearchParams();
    for (const key of FILTERS) {
      const value = filters.elements[key].value.trim();
      if (value) q.set(key, value);
    }
    return q;
  }

  async function loadGrants() {
    let grants;
    const q = grantQuery().toString();
    try { grants = await api("GET", "/api/grants" + (q ? "?" + q : "")); } catch (err) { message(msg, "grants: " + err.message, "bad"); return; }
    const what = Object.fromEntries((data.kinds || []).map((k) => [k.value, k.words]));
    $("grant-rows").replaceChildren(...grants.map((g) => {
      const pending = g.status === "pending";
      // Shown before anyone clicks; the API refuses the same and records the refusal.
      const why = g.requested_by === data.me ? "you asked for it: a different administrator confirms it"
        : g.user === data.me ? "a grant to yourself: another administrator confirms it" : null;
      const actions = pending ? el("td", { class: "actions" },
        el("button", { type: "button", class: "primary", "data-confirm": g.id, disabled: why !== null, title: why,
                       onclick: () => decide(g, "confirm") }, "Confirm"), " ",
        el("button", { type: "button", "data-cancel": g.id, onclick: () => decide(g, "cancel") }, "Refuse"),
        why ? el("span", { class: "muted" }, " " + why) : null) : el("td");
      return el("tr", { "data-grant": g.id },
        el("td", { class: "num" }, String(g.id)), el("td", {}, what[g.kind] || g.kind),
        el("td", {}, el("b", {}, g.user)), el("td", {}, el("span", { class: "role" }, g.role),
          g.cameras ? el("span", { class: "muted" }, " " + g.cameras.join(", ")) : null),
        el("td", {}, g.requested_by), el("td", { class: "mono" }, utc(g.requested_at)),
        el("td", {}, el("span", { class: "badge " + (pending ? "busy" : g.status === "confirmed" ? "ok" : "offline") }, g.status)),
        el("td", {}, g.decided_by || "—"), actions);
    }));
    $("grant-count").textContent = q ? `${grants.length} shown` : "";
    if (!grants.length) {
      $("grant-rows").replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "muted" },
        q ? "No grant matches this filter." : "No grants yet.")));
    }
  }

  function grantsPage() {
    const initial = new URLSearchParams(location.search);
    for (const key of FILTERS) if (initial.get(key)) filters.elements[key].value = initial.get(key);
    const show = () => {
      const q = grantQuery().toString();
      history.replaceState(null, "", q ? "?" + q : location.pathname);
      loadGrants();
    };
    filters.addEventListener("submit", (e) => { e.preventDefault(); show(); });
    $("grant-filters-clear").addEventListener("click", () => { filters.reset(); show(); });
    // Names to pick from (anyone who asked or decided may no longer have an account: typed).
    api("GET", "/api/users").then((users) => $("grant-users").replaceChildren(
      ...users.map((u) => el("option", { value: u.name })))).catch(() => {});
    loadGrants();
  }

  async function decide(g, how) {
    try {
      const r = await api("POST", `/api/grants/${g.id}/${how}`);
      message(msg, how === "confirm" ? `grant ${g.id} confirmed: ${g.user} is ${g.role}` : `grant ${g.id} refused`, "ok");
      if (r && r.password) showSecret(g.user, r.password);
    } catch (err) { message(msg, err.message, "bad"); }
    loadGrants();
  }

  if ($("user-rows")) usersPage();
  if ($("grant-rows")) grantsPage();
})();
