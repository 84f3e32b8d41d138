// Sign-in: the API sets the session cookie; then go where the user was heading.
"use strict";
(() => {
  const { next } = JSON.parse(document.getElementById("page-data").textContent);
  const form = document.getElementById("login");
  const msg = document.getElementById("message");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    custodes.message(msg, "", "");
    try {
      await custodes.api("POST", "/api/auth/login", {
        name: form.elements.name.value, password: form.elements.password.value,
      });
      location.href = next;
    } catch (err) {
      custodes.message(msg, err.message || "sign-in failed", "bad");
      form.elements.password.value = "";
      form.elements.password.focus();
    }
  });
})();
