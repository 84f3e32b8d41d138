// The hub's users page: a user's municipalities, saved through PUT /api/users/{name}/groups
// (custodes.api adds the session's CSRF header). The server decides and audits; this only
// sends the ticked boxes and says what came back.
"use strict";
(() => {
  for (const form of document.querySelectorAll("form.groups-form")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = form.querySelector(".status");
      const groups = [...form.querySelectorAll('input[name="group"]:checked')].map((i) => i.value);
      status.textContent = "saving…";
      try {
        const r = await custodes.api("PUT", `/api/users/${encodeURIComponent(form.dataset.user)}/groups`,
                                     { groups });
        form.closest("tr").querySelector(".groups").textContent =
          r.groups ? r.groups.join(", ") : "every municipality";
        status.textContent = "saved";
      } catch (err) {
        status.textContent = "not saved: " + err.message;
      }
    });
  }
})();
