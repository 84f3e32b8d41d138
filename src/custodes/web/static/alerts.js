// Cameras down, on every page: the Events link says how many of the user's cameras are offline
// (from /api/cameras, every 30 s), so a caretaker learns of an outage on whatever page is open,
// not only on the events page or a live tile. The camera_offline events themselves (and MQTT)
// are the record; this only points at them.
"use strict";
(() => {
  const link = document.querySelector('header nav a[data-nav="events"]');
  if (!link) return; // a role without events, or a page without navigation (sign-in, forced password)
  // No text beside it while hidden: the link reads "Events" as before.
  const badge = custodes.el("span", { class: "badge offline hidden", id: "cameras-down", role: "status",
                                      style: "margin-left: 4px" });
  link.append(badge);
  const everyMs = 30_000;

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
  look();
  setInterval(look, everyMs);
})();
