// Change your own password; when it was forced, go on to where the user was heading.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const form = document.getElementById("password-form");
  const msg = document.getElementById("message");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = form.elements;
    if (f.new_password.value !== f.new_password2.value) {
      custodes.message(msg, "the two new passwords differ", "bad");
      return;
    }
    try {
      await custodes.api("POST", "/api/auth/password", {
        old_password: f.old_password.value, new_password: f.new_password.value,
      });
      custodes.message(msg, "password changed; your other sessions and API tokens were ended", "ok");
      form.reset();
      if (data.forced) setTimeout(() => { location.href = data.next; }, 600);
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  });
})();
