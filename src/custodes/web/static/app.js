// custodes: helpers shared by every page (API calls with the CSRF header, time and size formats).
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
  // Times are UTC everywhere, as in the index and the audit log.
  function utc(t, withDate = true) {
    if (t === null || t === undefined) return "—";
    const d = new Date(t * 1000);
    const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
    if (!withDate) return time;
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}`;
  }
  const day = (t) => utc(t).slice(0, 10);
  // <input type="datetime-local"> values, read and written as UTC.
  function toInput(t) { return utc(t).replace(" ", "T"); }
  function fromInput(v) {
    if (!v) return null;
    const t = Date.parse(v.length === 16 ? v + ":00Z" : v + "Z");
    return Number.isNaN(t) ? null : t / 1000;
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

  return { api, ApiError, utc, day, toInput, fromInput, bytes, duration, el, message, cookie };
})();
