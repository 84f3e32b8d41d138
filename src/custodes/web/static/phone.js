// custodes: the two things every page does for the profile's device policy (privacy/devices.py).
// 1. Tell the server the screen size (cookie custodes_screen, CSS pixels), so that a school's
//    recorder can keep pictures off phone-sized screens. A hint the browser gives, not proof:
//    the server also reads Sec-CH-UA-Mobile and the User-Agent, and none of them is a
//    security boundary.
// 2. Watermark every picture shown (live tiles, playback, snapshots, crops) with the viewer's
//    name and the time, so that a phone photo of the screen says who was watching and when.
//    The mark is drawn over the picture on screen, not into it: it is there for the photo of
//    a screen, while downloads and exports carry their own signed manifest.
"use strict";

(() => {
  const s = window.screen;
  if (s && s.width && s.height) {
    document.cookie = `custodes_screen=${Math.round(s.width)}x${Math.round(s.height)}; path=/; ` +
      "SameSite=Strict";
  }

  const PICTURES = "main img, main video, main canvas";
  const pad = (n) => String(n).padStart(2, "0");
  function now() {
    const t = Date.now() / 1000;
    // app.js's `const custodes` is a global binding, not a property of window.
    const c = typeof custodes === "undefined" ? null : custodes;
    if (c && typeof c.local === "function" && typeof c.zone === "function") {
      return `${c.local(t)} ${c.zone()}`;
    }
    const d = new Date(t * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }
  function viewer() {
    const who = document.getElementById("who");
    return who ? who.textContent.trim() : "";
  }
  function text() { return `${viewer()} · ${now()}`; }

  function mark(picture) {
    const host = picture.parentElement;
    if (!host || host.querySelector(":scope > .watermark")) return;
    if (getComputedStyle(host).position === "static") host.style.position = "relative";
    const wm = document.createElement("div");
    wm.className = "watermark";
    wm.setAttribute("aria-hidden", "true");
    wm.textContent = text();
    host.appendChild(wm);
  }
  function scan() {
    if (!document.getElementById("who")) return;  // not signed in: no pictures either
    document.querySelectorAll(PICTURES).forEach(mark);
  }
  function tick() {
    const t = text();
    document.querySelectorAll(".watermark").forEach((wm) => { wm.textContent = t; });
  }
  function start() {
    scan();
    new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
    setInterval(tick, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
