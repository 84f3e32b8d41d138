// Your account: your sessions (end one) and API tokens (create one, shown once; revoke).
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const $ = (id) => document.getElementById(id);
  const { api, el, utc, message } = custodes;
  const msg = $("message");

  async function load() {
    let sessions, tokens;
    try {
      [sessions, tokens] = await Promise.all([api("GET", "/api/auth/sessions"), api("GET", "/api/auth/tokens")]);
    } catch (err) { message(msg, err.message, "bad"); return; }
    $("session-rows").replaceChildren(...sessions.map((s) => el("tr", { "data-session": s.id },
      el("td", { class: "mono" }, utc(s.created_at)), el("td", {}, s.address || "—"),
      el("td", { class: "mono" }, utc(s.last_used_at)), el("td", {}, s.last_address || "—"),
      el("td", { class: "muted", title: s.user_agent || "" }, browser(s.user_agent)),
      el("td", { class: "mono" }, utc(s.expires_at)),
      el("td", {}, s.current ? el("span", { class: "badge ok" }, "this browser") : null, " ",
         el("button", { type: "button", "data-end": s.id, onclick: () => end(s) }, s.current ? "Sign out here" : "End")))));
    const now = Date.now() / 1000;
    $("token-rows").replaceChildren(...tokens.slice().reverse().map((t) => {
      const state = t.revoked_at ? "revoked" : t.expires_at && t.expires_at <= now ? "expired" : "live";
      return el("tr", { "data-token": t.id },
        el("td", { class: "num" }, String(t.id)), el("td", {}, t.name),
        el("td", { class: "mono" }, utc(t.created_at)), el("td", { class: "mono" }, t.expires_at ? utc(t.expires_at) : "until revoked"),
        el("td", { class: "mono" }, utc(t.last_used_at)), el("td", {}, t.last_address || "—"),
        el("td", {}, el("span", { class: "badge " + (state === "live" ? "ok" : "offline") }, state)),
        el("td", {}, state === "live" ? el("button", { type: "button", "data-revoke": t.id, onclick: () => revoke(t) }, "Revoke") : null));
    }));
    if (!tokens.length) $("token-rows").replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No API tokens.")));
  }

  // A short name for a user agent: enough to tell a phone from a desktop browser.
  function browser(ua) {
    if (!ua) return "—";
    const name = /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Firefox\//.test(ua) ? "Firefox"
      : /Safari\//.test(ua) ? "Safari" : /curl|python|httpx/i.test(ua) ? "script" : "other";
    const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Windows/.test(ua) ? "Windows"
      : /Mac OS/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
    return os ? `${name} on ${os}` : name;
  }

  async function end(s) {
    try {
      await api("DELETE", `/api/auth/sessions/${s.id}`);
      if (s.current) { location.href = "/login"; return; }
      message(msg, "session ended", "ok");
    } catch (err) { message(msg, err.message, "bad"); }
    load();
  }

  async function revoke(t) {
    try {
      await api("DELETE", `/api/auth/tokens/${t.id}`);
      message(msg, `token ${t.id} revoked (and any made with it)`, "ok");
    } catch (err) { message(msg, err.message, "bad"); }
    load();
  }

  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    try {
      const r = await api("POST", "/api/auth/tokens", { name: f.elements.name.value.trim(), days: Number(f.elements.days.value) });
      $("secret-user").textContent = `${r.id} (${r.name})`;
      $("secret-value").textContent = r.token;
      $("secret").classList.remove("hidden");
      f.elements.name.value = "";
      message(msg, "", "");
    } catch (err) { message(msg, err.message, "bad"); }
    load();
  });
  $("secret-done").addEventListener("click", () => {
    $("secret-value").textContent = "";
    $("secret").classList.add("hidden");
  });
  void data;
  load();
})();
