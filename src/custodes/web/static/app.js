// custodes: helpers shared by every page (API calls with the CSRF header, site-local time and
// size formats).
"use strict";

const custodes = (() => {
  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // Every state-changing request from a cookie session carries the CSRF token in a header.
  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("custodes_csrf");
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url, {
      method, headers, cache: "no-store", credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401 && !url.startsWith("/api/auth/login")) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, "signed out");
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!r.ok) throw new ApiError(r.status, reason(data) || r.statusText);
    return data;
  }

  function reason(data) {
    if (!data) return "";
    if (typeof data === "string") return data;
    const d = data.detail ?? data.reason ?? data.error;
    if (Array.isArray(d)) return d.map((e) => (e.loc ? e.loc.slice(1).join(".") + ": " : "") + e.msg).join("; ");
    return typeof d === "string" ? d : JSON.stringify(d ?? data);
  }

  const pad = (n) => String(n).padStart(2, "0");
  // Times are shown in the site's time zone (node.timezone), whose name every page carries
  // and shows; the API, the database and the audit log keep UTC epoch seconds. The
  // viewer's own computer may be set to any zone: it does not matter here.
  const zone = () => (document.body && document.body.dataset.timezone) || "UTC";
  const formats = new Map();
  function fields(t) {
    const z = zone();
    let f = formats.get(z);
    if (!f) {
      f = new Intl.DateTimeFormat("en-GB", { timeZone: z, hourCycle: "h23", year: "numeric",
        month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
      formats.set(z, f);
    }
    const o = {};
    for (const p of f.formatToParts(new Date(Math.floor(t) * 1000))) o[p.type] = Number(p.value);
    return o;
  }
  // Seconds the site's clock is ahead of UTC at t.
  function offset(t) {
    const f = fields(t);
    return Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second) / 1000 - Math.floor(t);
  }
  // The UTC epoch seconds of a site-local wall-clock time (month 1-12). A time the clocks
  // skip in spring is read with the offset before the change.
  function fromLocal(year, month, day, hour = 0, minute = 0, second = 0) {
    const wall = Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
    const first = wall - offset(wall);
    return wall - offset(first);
  }
  // "YYYY-MM-DD HH:MM:SS", 24-hour, in the site's zone.
  function local(t, withDate = true) {
    if (t === null || t === undefined) return "—";
    const f = fields(t);
    const time = `${pad(f.hour)}:${pad(f.minute)}:${pad(f.second)}`;
    if (!withDate) return time;
    return `${f.year}-${pad(f.month)}-${pad(f.day)} ${time}`;
  }
  const day = (t) => local(t).slice(0, 10);
  // The site-local midnights that start "YYYY-MM-DD" and the day after (23 or 25 hours
  // apart when the clocks change); null for anything else.
  function dayRange(text) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
    if (!m) return null;
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const next = new Date(Date.UTC(y, mo - 1, d + 1));
    return [fromLocal(y, mo, d), fromLocal(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate())];
  }
  // Text inputs of site-local times: "YYYY-MM-DD HH:MM[:SS]" (a "T" works too); no AM/PM.
  function toInput(t) { return local(t); }
  function fromInput(v) {
    const m = /^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?\s*$/.exec(v || "");
    if (!m) return null;
    const [y, mo, d, h, mi, s] = m.slice(1).map((x) => Number(x || 0));
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return null;
    if (new Date(Date.UTC(y, mo - 1, d)).getUTCDate() !== d) return null;  // 31 April
    return fromLocal(y, mo, d, h, mi, s);
  }
  function bytes(b) {
    if (b === null || b === undefined) return "—";
    const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
    while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
    return b.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function duration(s) {
    if (s === null || s === undefined) return "—";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  // Build an element: el("td", {class: "num"}, "text", child, ...)
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function message(target, text, kind) {
    target.className = "message " + (kind || "");
    target.textContent = text;
    target.classList.toggle("hidden", !text);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", async () => {
      try { await api("POST", "/api/auth/logout"); } finally { location.href = "/login"; }
    });
  });

  // `utc` is the historic name of `local`: callers written before the site's zone get it too.
  return { api, ApiError, local, utc: local, day, dayRange, fromLocal, offset, zone, toInput,
           fromInput, bytes, duration, el, message, cookie };
})();
