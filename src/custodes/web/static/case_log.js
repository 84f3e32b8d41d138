// A case's use log (/api/cases/{id}/log): the authorisation it rests on, each face search with
// what it searched and with what, every result, and each person's verdict on it.
"use strict";
(() => {
  const el = custodes.el;
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const panel = document.getElementById("use-log");
  if (!panel) return;
  const base = `/api/cases/${data.case_id}`;
  const msg = document.getElementById("use-log-message");
  const when = (t) => custodes.utc(t);
  const VERDICTS = [["same_person", "Same person"], ["not_same_person", "Not the same"],
                    ["cannot_tell", "Cannot tell"]];

  function authorisation(a) {
    const box = document.getElementById("authorisation");
    if (a) {
      box.replaceChildren(el("span", { id: "authorisation-reference" }, a.reference), " · authorised ",
        el("span", { class: "mono" }, when(a.authorised_at)), el("span", { class: "muted" },
          ` (recorded by ${a.recorded_by} at ${when(a.recorded_at)})`));
      return;
    }
    const parts = [el("span", { class: "muted" }, "not recorded")];
    if (data.can_approve) {
      const ref = el("input", { id: "auth-reference", placeholder: "court order / decision no." });
      const at = el("input", { id: "auth-at", placeholder: "YYYY-MM-DD HH:MM:SS", class: "when" });
      const save = el("button", { type: "button", id: "auth-save", onclick: async () => {
        const t = custodes.fromInput(at.value);
        if (t === null) { custodes.message(msg, "the authorisation time reads YYYY-MM-DD HH:MM:SS", "bad"); return; }
        try {
          await custodes.api("POST", `${base}/authorisation`, { reference: ref.value, authorised_at: t });
          custodes.message(msg, "authorisation recorded", "ok");
          refresh();
        } catch (err) { custodes.message(msg, err.message, "bad"); }
      } }, "Record authorisation");
      parts.push(" ", ref, " ", at, " ", save);
    }
    box.replaceChildren(...parts);
  }

  function resultRow(use, x) {
    const verdicts = x.verifications.map((v) => el("div", { class: "verdict" },
      `${v.verified_by}: ${v.verdict.replaceAll("_", " ")} (${when(v.verified_at)})`));
    const mine = x.verifications.some((v) => v.verified_by === data.me);
    const buttons = mine ? [] : VERDICTS.map(([value, label]) => el("button", {
      type: "button", class: "verify", "data-verdict": value, onclick: async () => {
        try {
          await custodes.api("POST", `${base}/uses/${use.id}/results/${x.rank}/verify`, { verdict: value });
          refresh();
        } catch (err) { custodes.message(msg, err.message, "bad"); }
      } }, label));
    return el("tr", { "data-use": use.id, "data-rank": x.rank },
      el("td", {}, String(x.rank)), el("td", {}, x.camera), el("td", { class: "mono" }, when(x.start)),
      el("td", { class: "num" }, x.distance.toFixed(3)), el("td", {}, x.level),
      el("td", {}, ...verdicts, ...buttons),
      el("td", {}, el("span", { class: "badge " + (x.confirmed ? "ok" : "busy") },
        x.confirmed ? "confirmed" : `needs ${confirming} people`)));
  }

  let confirming = 2;
  function useBlock(use) {
    const db = use.reference_db;
    const head = el("tr", { class: "use" }, el("td", { colspan: "7" },
      el("b", {}, `Search ${use.id}`), ` by ${use.actor}, ${when(use.started_at)} – ${when(use.ended_at)}; `,
      `searched ${db.cameras.join(", ") || "no camera"} from ${when(db.start)} to ${when(db.end)} `,
      `(${db.searchable} of ${db.tracks_in_window} face tracks comparable; ${db.faces_recorded} recorded, newest #${db.newest_face_id ?? "—"}); `,
      `input: ${use.input.subjects.map((s) => s.label || "#" + s.id).join(", ") || "no subject"}; `,
      `${use.results.length} results, ${use.outcome}`));
    return [head, ...use.results.map((x) => resultRow(use, x))];
  }

  async function refresh() {
    try {
      const log = await custodes.api("GET", `${base}/log`);
      confirming = log.confirming;
      authorisation(log.authorisation);
      const rows = document.getElementById("uses");
      rows.replaceChildren(...log.uses.flatMap(useBlock));
      if (!log.uses.length) rows.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No search yet.")));
    } catch (err) {
      custodes.message(msg, err.message, "bad");
    }
  }
  refresh();
  // A search made on this page adds a use: look again now and then.
  setInterval(refresh, 5000);
})();
