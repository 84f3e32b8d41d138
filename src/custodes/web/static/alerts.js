// Cameras down, on every page: the Events link says how many of the user's cameras are offline
// (from /api/cameras), so a caretaker learns of an outage on whatever page is open, not only
// on the events page or a live tile. The camera_offline events themselves (and MQTT) are the
// record; this only points at them.
// Timely without hammering: the node has no push channel for camera states (its only
// WebSocket carries one camera's video), so this asks /api/cameras (in memory, no disk) at
// the live page's rate, 5 s, one request at a time, only while the page is visible, and at
// once when it becomes visible again: a background tab costs the server nothing.
"use strict";
(() => {
  const link = document.querySelector('header nav a[data-nav="events"]');
  if (!link) return; // a role without events, or a page without navigation (sign-in, forced password)
  // No text beside it while hidden: the link reads "Events" as before.
  const badge = custodes.el("span", { class: "badge offline hidden", id: "cameras-down", role: "status",
                                      style: "margin-left: 4px" });
  link.append(badge);
  const everyMs = 5_000; // as live.js's health badges
  let timer = null;

  async function look() {
    let cams;
    try {
      ({ cameras: cams } = await custodes.api("GET", "/api/cameras"));
    } catch (err) {
      // Said, not hidden: the count is unknown, not zero.
      badge.textContent = "?";
      badge.title = "camera states unknown: " + err.message;
      badge.classList.remove("hidden");
      return;
    }
    const down = cams.filter((c) => c.state === "offline");
    badge.textContent = `${down.length} down`;
    badge.title = down.map((c) => `${c.name}: ${c.reason || "offline"}`).join("\n");
    badge.classList.toggle("hidden", down.length === 0);
    link.href = down.length ? "/events?kind=camera_offline" : "/events";
  }
  // One chain of timeouts, not an interval: a slow answer never stacks requests up, and a
  // tab shown again while a request is out does not start a second chain.
  let busy = false;
  async function round() {
    clearTimeout(timer);
    timer = null;
    if (busy) return;
    busy = true;
    try { await look(); } finally { busy = false; }
    if (!document.hidden) timer = setTimeout(round, everyMs);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      round();
    } else {
      clearTimeout(timer);
      timer = null;
    }
  });
  round();
})();
