"""The inspection report in plain words: the facts of the pack, laid out for a person.

``custodes.audit.report`` gathers the facts (``report.json``, for machines); this module turns
them into sections of sentences and tables that an inspector reads without knowing custodes:
no Python values (``None``, ``{'consent': 1}``), no internal names (``subject_access``), no
epoch seconds. Times are shown in the site's time zone, with the zone named once at the top.
The same sections become ``report.md`` here and ``report.pdf`` in ``report_pdf``, so the two
cannot say different things.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from custodes.keys import PUBLIC_KEY
from custodes.record.manifest import MANIFEST, SIGNATURE

AUDIT_FILE = "audit-log.jsonl"  # custodes.audit.report.AUDIT_FILE (imported from here there)
PDF_FILE = "report.pdf"
DASH = "—"
LOCAL = "on the recorder itself"  # an audit entry without a network address


@dataclass(frozen=True)
class Para:
    text: str
    strong: bool = False  # a finding the inspector must not miss
    code: bool = False  # a command to type, shown as it is


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    empty: str  # said instead of an empty table


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    empty: str


Block = Para | Table | Bullets


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[Block]


@dataclass(frozen=True)
class Readable:
    title: str
    subtitle: str
    fingerprint: str
    sections: list[Section]


# -- words for the node's own names ------------------------------------------------------

# What each biometric action of a profile means (custodes.privacy.policy.Action).
PROFILE_ACTIONS = {
    "embed": "compute and store face descriptors (biometric templates) of people on camera",
    "enroll": "add a named person to the gallery of people to look for",
    "search": "search recordings for a person's face, inside an approved case",
    "watchlist": "alert live when a person of an approved case appears",
    "subject_access": "give people their own footage on request, everyone else blurred",
}

# The audit log's actions (custodes.audit.actions.Action) as an inspector would say them.
AUDIT_ACTIONS = {
    "live.view": "live pictures watched",
    "playback": "recordings played back",
    "segment.original": "original (unblurred) recording opened",
    "export": "footage exported",
    "export.download": "export downloaded",
    "export.expire": "export deleted by the recorder",
    "retention.delete": "old footage deleted",
    "hold.add": "footage protected from deletion",
    "hold.release": "protection from deletion lifted",
    "login": "sign-in",
    "logout": "sign-out",
    "token.create": "API key created",
    "token.revoke": "API key revoked",
    "access": "request outside the user's role",
    "camera.access": "camera outside the user's cameras",
    "client.refused": "connection from an address not allowed",
    "user.add": "user added",
    "user.update": "user changed",
    "user.reset_password": "password reset by an administrator",
    "user.password": "own password changed",
    "user.grant_request": "powerful role asked for",
    "user.grant_confirm": "powerful role confirmed by a second administrator",
    "user.grant_cancel": "powerful role request cancelled",
    "case.open": "case opened",
    "case.add_subject": "person added to a case",
    "case.approve": "case approved",
    "case.reject": "case rejected",
    "case.close": "case closed",
    "case.expire": "case expired",
    "case.view": "case looked at",
    "case.list": "cases listed",
    "case.subject_crop": "face picture of a case's person opened",
    "face.search": "face search",
    "gallery.enroll": "person enrolled in the gallery",
    "gallery.approve": "gallery entry approved",
    "gallery.update": "gallery entry changed",
    "gallery.delete": "gallery entry deleted",
    "gallery.expire": "gallery entry expired",
    "gallery.list": "gallery listed",
    "gallery.view": "gallery face pictures opened",
    "watchlist.alert": "live alert for a case's person",
    "alert.confirm": "live alert confirmed",
    "alert.dismiss": "live alert dismissed",
    "subject_access.record": "access request recorded",
    "subject_access.approve": "access request approved",
    "subject_access.reject": "access request rejected",
    "subject_access.photo": "requester's photo looked at",
    "subject_access.export": "access request answered with footage",
    "subject_access.expire": "access request lapsed",
    "subject_access.view": "access request looked at",
    "subject_access.list": "access requests listed",
    "subject_access.request": "access request",
    "profile.pin": "deployment profile fixed at first start",
    "profile.change": "deployment profile changed",
    "biometric.wipe": "biometric data deleted after a profile change",
    "node.start": "recorder started",
    "node.stop": "recorder stopped",
    "config.change": "configuration changed",
    "audit.sign": "audit log signing refused",
    "audit.export": "audit log exported",
    "audit.verify": "audit log checked",
    "inspection.report": "inspection report made",
}

DELETION_TRIGGERS = {
    "age": "older than the retention limit",
    "motion": "no motion (motion-only recording)",
    "quota": "disk quota reached",
    "emergency": "disk almost full",
    "reconcile": "files found missing at start-up",
}

CASE_STATUS = {"pending": "waiting for approval", "approved": "approved",
               "rejected": "rejected", "closed": "closed", "expired": "expired"}

GRANT_KINDS = {"add": "new user", "role": "role change", "reset": "password reset"}


def action_words(action: str) -> str:
    return AUDIT_ACTIONS.get(action, action.replace("_", " ").replace(".", ": "))


# -- values ------------------------------------------------------------------------------

_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal",
                        "Zulu", "Etc/Zulu"})


class Clock:
    """Shows the pack's UTC times in one time zone, as ISO dates with 24-hour times."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = "UTC" if zone in _UTC_NAMES else zone
        self._tz = UTC if zone == "UTC" else ZoneInfo(zone)

    def at(self, value: str | float | None, *, none: str = DASH) -> str:
        if value is None or value == "":
            return none
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        local = moment.astimezone(self._tz)
        text = local.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text} UTC" if self.zone == "UTC" else f"{text} {local.strftime('%z')[:3]}:" \
            f"{local.strftime('%z')[3:]}"

    def describe(self) -> str:
        if self.zone == "UTC":
            return "All times are in UTC."
        return f"All times are local to the site ({self.zone}), with their offset from UTC."


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def text(value: object, *, none: str = DASH) -> str:
    """Any fact as words: never a Python repr."""
    if value is None or value == "":
        return none
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {text(v)}" for k, v in value.items()) or none
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or none
    return str(value)


def size(n: float | None) -> str:
    if n is None:
        return DASH
    value, units = float(n), ["bytes", "kB", "MB", "GB", "TB"]
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{int(value)} bytes" if i == 0 else f"{value:.1f} {units[i]}"


def hours(h: float | None) -> str:
    if h is None:
        return DASH
    return f"{h / 24:g} days" if h >= 48 and h % 24 == 0 else f"{h:g} h"


def _detail(detail: object, clock: Clock) -> str:
    """An audit entry's detail: times in ``since``/``until``/``at`` keys shown as times."""
    if not isinstance(detail, dict):
        return text(detail)
    parts = []
    for key, value in detail.items():
        shown = clock.at(value) if key in ("since", "until", "at") and isinstance(
            value, (int, float)) else text(value)
        parts.append(f"{key.replace('_', ' ')}: {shown}")
    return "; ".join(parts) or DASH


# -- verification ----------------------------------------------------------------------------

def verification_steps(folder: str, example: str, fingerprint: str) -> list[Para]:
    """How to check a signed folder with plain OpenSSL 3, and why the key needs a second
    channel. The export README says the same in text (custodes.record.readme)."""
    return [
        Para(f"{MANIFEST} lists every file of the pack with its SHA-256 checksum; {SIGNATURE} "
             f"is the recorder's Ed25519 signature over {MANIFEST}; {PUBLIC_KEY} is the "
             "recorder's public key. No custodes software is needed: OpenSSL 3 checks all of "
             "it. In the unzipped folder, run:"),
        Para(f"cd {folder}\n"
             f"openssl pkeyutl -verify -pubin -inkey {PUBLIC_KEY} -rawin -in {MANIFEST} "
             f"-sigfile {SIGNATURE}", code=True),
        Para('It must print "Signature Verified Successfully". Then compute the checksum of '
             f"each file and compare it with its \"sha256\" in {MANIFEST}, for example:"),
        Para(f"openssl dgst -sha256 {example}", code=True),
        Para("The key must be the recorder's own: whoever altered this pack could have "
             f"replaced {PUBLIC_KEY} and signed again with a key of their own. The key's "
             "fingerprint is:"),
        Para(fingerprint, code=True),
        Para("Confirm it with the recorder's operator through another channel (by telephone, "
             "on paper, from the operator's published key), never from this pack alone. To "
             "compute it from the key file:", strong=True),
        Para(f"openssl pkey -pubin -in {PUBLIC_KEY} -outform DER | tail -c 32 | "
             "openssl dgst -sha256", code=True),
        Para('It prints the same hexadecimal digits (after "SHA2-256(stdin)= ") as the '
             'fingerprint above (after "SHA256:").'),
    ]


# -- the sections ----------------------------------------------------------------------------

def readable(facts: dict[str, Any], *, folder: str = "the pack's folder",
             zone: str | None = None, max_listed: int = 200) -> Readable:
    """The report of ``facts`` (custodes.audit.report.inspection_facts) in plain words."""
    clock = Clock(zone or facts.get("timezone") or "UTC")
    chain = facts["audit_chain"]
    fingerprint = chain["public_key_fingerprint"]
    period = facts["period"]
    sections = [
        Section("About this report", [
            Para(f"Recorder {facts['node']}, period {clock.at(period[0])} to "
                 f"{clock.at(period[1])}. Made {clock.at(facts['generated_at'])} by "
                 f"{facts['software']}. {clock.describe()}"),
            Para("Every statement below is taken from the recorder's own database and audit "
                 "log at the time the report was made, not from documentation. The same facts "
                 "are in report.json for machines; the audit log entries of the period are in "
                 f"{AUDIT_FILE}. The pack holds nothing biometric: no face pictures and no face "
                 "descriptors; cases and requests appear by their reference."),
            Para("The pack is signed by the recorder: see 'Checking this pack' at the end. Its "
                 f"signing key's fingerprint is {fingerprint}; confirm it through another "
                 "channel."),
        ]),
        _profile_section(facts["deployment"]),
        _cameras_section(facts["cameras"]),
        _camera_risk_section(facts.get("camera_risk"), clock),
        _retention_section(facts["retention"], clock),
        _cases_section(facts["cases"], clock),
        _subject_access_section(facts.get("subject_access", []), clock),
        _gallery_section(facts["gallery"]),
        _access_section(facts["access"], clock, max_listed),
        _users_section(facts["users"], clock),
        _duties_section(facts["separation_of_duties"], clock),
        *([_risk_section(facts["camera_risk"], clock)] if "camera_risk" in facts else []),
        _chain_section(chain, clock),
        Section("Checking this pack", verification_steps(folder, "report.pdf", fingerprint)),
    ]
    return Readable(f"Inspection report: recorder {facts['node']}",
                    f"{clock.at(period[0])} to {clock.at(period[1])}", fingerprint, sections)


def _profile_section(d: dict[str, Any]) -> Section:
    allowed = [PROFILE_ACTIONS.get(a, a) for a, ok in d["allows"].items() if ok]
    refused = [PROFILE_ACTIONS.get(a, a) for a, ok in d["allows"].items() if not ok]
    return Section("Deployment profile", [
        Para(f"Profile **{d['profile']}**. The profile is fixed in the software: no user, "
             "administrators included, can do what it refuses."),
        Bullets([f"allowed: {a}" for a in allowed] + [f"refused: {a}" for a in refused],
                empty="no biometric actions"),
        Para("Attribute inference (emotion, age, gender and the like): none; custodes has no "
             "such function in any profile. Audio: never recorded; the recorder drops every "
             "audio stream."),
    ])


def _cameras_section(cameras: list[dict[str, Any]]) -> Section:
    return Section("Cameras", [Table(
        ("camera", "site", "location", "placement", "purpose", "recording", "kept for",
         "face descriptors", "privacy zones"),
        [(c["name"], c["site"], c["location"], c["placement"], c["purpose"],
          c["record_mode"] if c["enabled"] else "camera switched off",
          hours(c["retention_hours"]), yes_no(c["face_descriptors"]),
          str(c["privacy_zones"])) for c in cameras],
        empty="No cameras are configured.")])


def _camera_risk_section(risk: dict[str, Any] | None, clock: Clock) -> Section:
    """The last fleet risk audit (custodes.cameras.audit.summary)."""
    if risk is None:
        return Section("Camera risk audit", [Para("Not part of this pack's format.")])
    data = risk["risk_data"]
    sources = "; ".join(f"{s['title']} ({s['url']}, taken {s['taken']})"
                        for s in data.get("sources", []))
    blocks: list[Block] = [Para(
        f"Risk data in force: {data.get('version') or data.get('error')}. Sources: "
        f"{sources or DASH}.")]
    if not risk["ran"]:
        return Section("Camera risk audit", [*blocks, Para(text(risk["note"]))])
    blocks.insert(0, Para(
        f"Last audit {clock.at(risk['at'])} with risk data {risk['audit_risk_data_version']}: "
        f"known exploited vulnerabilities, the FCC Covered List, streams and ONVIF reachable "
        "without credentials, anonymous user lists and clock drift."))
    rows: list[tuple[str, ...]] = [
        (str(c["camera"]), str(f["severity"]), str(f["code"]), str(f["message"]))
        for c in risk["cameras"] for f in c["findings"]]
    rows += [(str(c["camera"]), DASH, DASH, "not audited (added after the audit)")
             for c in risk["cameras"] if not c["audited"]]
    blocks.append(Table(("camera", "severity", "finding", "what"), rows,
                        empty="No findings."))
    return Section("Camera risk audit", blocks)


def _retention_section(r: dict[str, Any], clock: Clock) -> Section:
    by_trigger = r["deletions_by_trigger"]
    late = [c["camera"] for c in r["cameras"] if not c["within_limit"]]
    return Section("Retention: how long footage is kept", [
        Para(f"Footage is kept {hours(r['default_hours'])} unless a camera says otherwise; no "
             f"camera may keep it longer than {r['ceiling_days']:g} days. Footage older than "
             "its limit is a finding unless a hold (below) explains it."),
        Table(("camera", "limit", "oldest footage", "its age", "within the limit",
               "recording files", "size"),
              [(c["camera"], hours(c["retention_hours"]), clock.at(c["oldest"], none="none"),
                hours(c["oldest_age_hours"]) if c["oldest_age_hours"] is not None else DASH,
                yes_no(c["within_limit"]) if c["within_limit"] else "NO",
                str(c["segments"]), size(c["bytes"])) for c in r["cameras"]],
              empty="No footage is recorded."),
        *([Para("Footage kept beyond its limit: " + ", ".join(late) + ".", strong=True)]
          if late else []),
        Para("Deletions in the period:"),
        Bullets([f"{DELETION_TRIGGERS.get(t, t)}: {v['passes']} deletion runs, "
                 f"{v['segments']} recording files, {size(v['bytes'])}"
                 for t, v in by_trigger.items()], empty="none"),
        Para("Holds (footage protected from deletion, e.g. for a complaint or a case):"),
        Bullets([f"hold {h['id']}: camera {h['camera']}, {clock.at(h['start'])} to "
                 f"{clock.at(h['end'])}; reason: {text(h['reason'])}; placed by {h['by']}; "
                 f"ends {clock.at(h['expires'], none='only when released')}"
                 for h in r["holds_active"]], empty="none"),
    ])


def _cases_section(cases: list[dict[str, Any]], clock: Clock) -> Section:
    return Section("Cases (identification of people)", [
        Para("Face search and live alerts are possible only inside a case that a second "
             "person approved; each search is in the audit log."),
        Table(("case", "reference", "legal basis", "status", "opened by", "approved or "
               "rejected by", "cameras", "footage covered", "searches", "alerts"),
              [(str(c["id"]), c["reference"], c["legal_basis"],
                CASE_STATUS.get(c["status"], c["status"]), c["opened_by"],
                text(c["decided_by"], none="not decided"), text(c["cameras"], none="all"),
                f"{clock.at(c['scope'][0])} to {clock.at(c['scope'][1])}",
                str(c["searches"]), str(c["alerts"])) for c in cases],
              empty="No cases were open in the period."),
    ])


def _subject_access_section(requests: list[dict[str, Any]], clock: Clock) -> Section:
    return Section("Requests by people for their own footage", [
        Para("By reference only: the requester's name and photo stay on the recorder; the "
             "officer who holds the reference can name the requester to the inspector."),
        Table(("request", "reference", "camera", "footage", "identity checked (how, by, when)",
               "recorded by", "status", "decided by"),
              [(str(x["id"]), x["reference"], x["camera"],
                f"{clock.at(x['span'][0])} to {clock.at(x['span'][1])}",
                f"{x['identity_check']}, {x['identity_checked_by']}, "
                f"{clock.at(x['identity_checked_at'])}", x["recorded_by"],
                CASE_STATUS.get(x["status"], x["status"]),
                text(x["decided_by"], none="not decided")) for x in requests],
              empty="No requests were recorded in the period."),
    ])


def _gallery_section(g: dict[str, Any]) -> Section:
    by_basis = g["people_by_basis"]
    return Section("Gallery (people enrolled to be looked for)", [
        Para("Enrolled people: " + (", ".join(
            f"{n} on the basis of {'a case' if basis == 'case' else 'their consent'}"
            if basis in ("case", "consent") else f"{n} ({basis})"
            for basis, n in by_basis.items()) or "none") + ". "
            f"Entries past their expiry and not yet deleted: {g['expired_not_yet_deleted']}."),
    ])


def _access_section(acc: dict[str, Any], clock: Clock, max_listed: int) -> Section:
    return Section("Who did what (from the audit log)", [
        Table(("action", "done", "refused", "failed"),
              [(action_words(a), str(v.get("ok", 0)), str(v.get("refused", 0)),
                str(v.get("failed", 0))) for a, v in acc["by_action"].items()],
              empty="Nothing was recorded in the period."),
        Para(f"Refused requests, newest first (at most {max_listed}):"),
        Bullets([f"{clock.at(x['at'])}: {x['actor']} ({text(x['address'], none=LOCAL)}): "
                 f"{action_words(x['action'])}, {text(x['target'])}; "
                 f"reason: {text(x['reason'], none='not recorded')} (log entry {x['seq']})"
                 for x in acc["refusals"]], empty="none"),
    ])


def _users_section(users: list[dict[str, Any]], clock: Clock) -> Section:
    return Section("Users", [Table(
        ("name", "role", "cameras", "account", "created"),
        [(u["name"], u["role"], text(u["cameras"], none="all"),
          "disabled" if u["disabled"] else "active", clock.at(u["created_at"]))
         for u in users], empty="No users.")])


def _duties_section(duties: dict[str, Any], clock: Clock) -> Section:
    pinned = duties["profile_pinned"]
    return Section("Separation of duties", [
        Para("Profile fixed: " + (f"{pinned['profile']} since {clock.at(pinned['since'])} "
                                  f"(by {pinned['by']})" if pinned else "not yet") + "."),
        Bullets([f"{clock.at(e['at'])}: {action_words(e['action'])} by {e['by']} "
                 f"({_detail(e['detail'], clock)})" for e in duties["profile_events"]],
                empty="no profile changes in the period"),
        Para("Powerful roles (administrator, investigator, approver) and password resets take "
             "a second administrator's confirmation:"),
        Table(("request", "kind", "user", "role", "asked by", "status", "confirmed by"),
              [(str(x["id"]), GRANT_KINDS.get(x["kind"], x["kind"]), x["user"], x["role"],
                x["requested_by"], x["status"], text(x["decided_by"], none="nobody yet"))
               for x in duties["grants"]], empty="No such requests in the period."),
        Para("Gallery entries waiting for a second person's approval (not used for matching "
             f"until then): {duties['gallery_pending_approval']}."),
        Para("Findings:"),
        Bullets([f"**{flag}**" for flag in duties["flags"]], empty="none"),
    ])


def _finding(f: object) -> str:
    if isinstance(f, dict):
        words = f"{f.get('severity', '')}: {f.get('message') or f.get('code', '')}".strip(": ")
        return words + (f" ({f['reference']})" if f.get("reference") else "")
    return text(f)


def _risk_section(risk: dict[str, Any], clock: Clock) -> Section:
    """The last fleet risk audit of the cameras themselves (custodes.cameras.audit)."""
    if not risk.get("ran"):
        return Section("Camera security (fleet risk audit)", [
            Para(text(risk.get("note"), none="No camera security audit has run."))])
    return Section("Camera security (fleet risk audit)", [
        Para(f"Last run {clock.at(risk.get('at'), none='at an unknown time')}; findings by "
             f"severity: {text(risk.get('counts'), none='none')}."),
        Table(("camera", "audited", "worst", "findings"),
              [(str(c.get("camera")), yes_no(c.get("audited")),
                text(c.get("worst"), none="nothing found"),
                "; ".join(_finding(f) for f in c.get("findings") or []) or "none")
               for c in risk.get("cameras", [])],
              empty="No cameras."),
    ])


def _chain_section(chain: dict[str, Any], clock: Clock) -> Section:
    anchor = chain.get("anchor")
    return Section("Audit log integrity", [
        Para(("The audit log is intact: " if chain["ok"] else "THE AUDIT LOG IS DAMAGED: ")
             + chain["summary"] + ".", strong=not chain["ok"]),
        Bullets(list(chain["problems"]), empty="no problems found"),
        *([] if not anchor else [Para(
            f"The recorder last signed log entry {anchor['seq']} at {clock.at(anchor['at'])} "
            f"(entry hash {anchor['hash']}). Keep this pack: a later copy of the log that does "
            "not contain this entry unchanged has been rewritten.")]),
    ])


# -- Markdown ----------------------------------------------------------------------------

def _md_table(table: Table) -> Iterable[str]:
    if not table.rows:
        yield table.empty
        return
    yield "| " + " | ".join(table.header) + " |"
    yield "|" + "---|" * len(table.header)
    for row in table.rows:
        yield "| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in row) + " |"


def _md_block(block: Block) -> Sequence[str]:
    if isinstance(block, Table):
        return list(_md_table(block))
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items] or [f"- {block.empty}"]
    if block.code:
        return ["```", block.text, "```"]
    return [f"**{block.text}**" if block.strong else block.text]


def to_markdown(report: Readable) -> str:
    out = [f"# {report.title}", "", report.subtitle, ""]
    for section in report.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            out += [*_md_block(block), ""]
    return "\n".join(out)
