"""The inspection pack: facts from the node's own records, signed, verifiable offline."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select
from typer.testing import CliRunner

from custodes.audit.actions import Action
from custodes.audit.log import SYSTEM, AuditLog, Outcome
from custodes.audit.report import write_pack
from custodes.auth.grants import Accounts
from custodes.auth.roles import Actor, Role
from custodes.auth.users import Users, ensure_admin
from custodes.cli import app
from custodes.config import Config, load_config
from custodes.keys import NodeKeys
from custodes.privacy.pinning import pin_profile
from custodes.privacy.policy import Profile, Refused
from custodes.privacy.subject_access import SubjectAccess
from custodes.record.holds import add_hold
from custodes.record.layout import Layout
from custodes.record.manifest import verify_bundle
from custodes.store import schema
from custodes.store.db import Store

CONFIG = """\
profile: school
node:
  name: school-7
sites:
  s:
    name: Primary school 7
cameras:
  hall:
    site: s
    location: corridor
    purpose: Corridor by the gym, after a break-in in 2025
    main_url: rtsp://127.0.0.1:9/hall
    privacy_zones: [[[0, 0], [0.2, 0], [0.2, 0.2]]]
storage:
  path: var
"""


def make_node(tmp_path: Path) -> tuple[Path, Config]:
    path = tmp_path / "custodes.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    Layout(config.storage.path).create()
    return path, config


def test_the_pack_states_the_facts_and_verifies(tmp_path: Path) -> None:
    _, config = make_node(tmp_path)
    keys = NodeKeys.load_or_create(config.key_dir)
    with Store(Layout(config.storage.path).database) as store:
        audit = AuditLog(store, keys)
        ensure_admin(store, audit)
        audit.record_refusal("dora", Action.FACE_SEARCH, "case 1",
                             "the school profile does not allow face search")
        audit.record("eve", Action.LOGIN, "eve", outcome=Outcome.FAILED, address="127.0.0.1")
        now = time.time()
        add_hold(store, camera="hall", start=now - 3600, end=now, reason="complaint 17",
                 created_by="dpo", expires_at=None)
        pack = write_pack(config, store, keys, audit, tmp_path / "pack", actor="inspector",
                          since=now - 86400)

    facts = pack.facts
    assert facts["deployment"]["profile"] == "school"
    assert facts["deployment"]["allows"]["search"] is False
    assert facts["cameras"] == [{
        "name": "hall", "site": "s", "location": "corridor",
        "purpose": "Corridor by the gym, after a break-in in 2025", "placement": "allowed",
        "enabled": True, "record_mode": "continuous", "retention_hours": 72,
        "face_detection": True, "face_descriptors": False, "privacy_zones": 1,
    }]
    assert [h["reason"] for h in facts["retention"]["holds_active"]] == ["complaint 17"]
    assert [(r["actor"], r["reason"]) for r in facts["access"]["refusals"]] == [
        ("dora", "the school profile does not allow face search")
    ]
    assert facts["access"]["by_action"]["login"] == {"failed": 1}
    assert [u["name"] for u in facts["users"]] == ["admin"]
    assert facts["audit_chain"]["ok"]
    markdown = (pack.folder / "report.md").read_text()
    assert "Profile **school**" in markdown
    assert "| hall | s | corridor | allowed |" in markdown
    assert json.loads((pack.folder / "report.json").read_text()) == facts

    report = verify_bundle(pack.folder, keys.public_pem)
    assert report.ok, report.problems
    (pack.folder / "report.md").write_text(markdown.replace("complaint 17", "nothing"))
    altered = verify_bundle(pack.folder, keys.public_pem)
    assert [p for p in altered.problems if "report.md" in p]


def test_a_broken_audit_chain_is_reported_and_the_command_fails(tmp_path: Path) -> None:
    path, config = make_node(tmp_path)
    keys = NodeKeys.load_or_create(config.key_dir)
    with Store(Layout(config.storage.path).database) as store:
        audit = AuditLog(store, keys)
        for i in range(3):
            audit.record(SYSTEM, Action.NODE_START, str(i))
    ok = CliRunner().invoke(app, ["report", "-c", str(path), str(tmp_path / "first")])
    assert ok.exit_code == 0, ok.output
    assert "audit log: 5 entries (entries 1..5), 1 checkpoints, signed through entry 5" in (
        ok.output
    )

    with closing(sqlite3.connect(Layout(config.storage.path).database)) as db:
        db.executescript("DROP TRIGGER audit_log_no_update;"
                         "UPDATE audit_log SET actor = 'someone' WHERE seq = 2;")
    bad = CliRunner().invoke(app, ["report", "-c", str(path), str(tmp_path / "second")])
    assert bad.exit_code == 1
    facts = json.loads((tmp_path / "second" / "report.json").read_text())
    assert facts["audit_chain"]["problems"] == [
        "entry 2: modified (hash does not match its content)"
    ]
    again = CliRunner().invoke(app, ["report", "-c", str(path), str(tmp_path / "second")])
    assert again.exit_code == 1
    assert "exists already" in again.output


def test_subject_access_requests_are_in_the_pack_and_lapse_with_their_photo(
        tmp_path: Path) -> None:
    """Issue 10, item 6: each request is listed for the inspector (reference, identity check,
    recorder, decider), never the requester's name; a request not exported in time lapses
    and its sealed photo is wiped."""
    _, config = make_node(tmp_path)
    keys = NodeKeys.load_or_create(config.key_dir)
    with Store(Layout(config.storage.path).database) as store:
        audit = AuditLog(store, keys)
        store.write(lambda conn: conn.execute(insert(schema.users), [
            {"name": name, "role": "approver", "cameras": None, "password_hash": "-",
             "disabled": 0, "created_at": 0.0, "password_changed_at": 0.0}
            for name in ("dora", "eve")]))
        now = time.time()
        clock = [now]
        access = SubjectAccess(store, keys, audit, Profile.SCHOOL, lambda: clock[0],
                               known_cameras=["hall"])
        dora, eve = Actor("dora", Role.APPROVER), Actor("eve", Role.APPROVER)
        answered = access.record(dora, reference="SAR-11", requester="Pat Pupil",
                                 identity_check="school card and parent present",
                                 identity_checked_by="dora", identity_checked_at=now,
                                 camera="hall", start=now - 3600, end=now - 1800,
                                 photo=b"a photo")
        access.approve(eve, answered.id, note="card matches")
        forgotten = access.record(dora, reference="SAR-12", requester="Sam Pupil",
                                  identity_check="passport", identity_checked_by="dora",
                                  identity_checked_at=now, camera="hall", start=now - 600,
                                  end=now, photo=b"another photo")
        assert access.expire_due(now + 13 * 86400) == []
        clock[0] = now + 15 * 86400
        assert access.expire_due() == [answered.id, forgotten.id]  # approved, not exported
        with store.read() as conn:
            photos = conn.execute(select(schema.subject_access_requests.c.photo)).scalars()
            assert list(photos) == [None, None]
        with pytest.raises(Refused, match="the request is expired"):
            access.spend(eve, answered.id, "20260101-000000-0123abcd")
        pack = write_pack(config, store, keys, audit, tmp_path / "pack", actor="inspector",
                          since=now - 86400, now=now + 15 * 86400)

    listed = [(x["reference"], x["identity_check"], x["recorded_by"], x["decided_by"],
               x["status"]) for x in pack.facts["subject_access"]]
    assert listed == [("SAR-11", "school card and parent present", "dora", "eve", "expired"),
                      ("SAR-12", "passport", "dora", None, "expired")]
    text = (pack.folder / "report.md").read_text()
    assert "## Requests by people for their own footage" in text
    assert "| SAR-11 | hall |" in text
    assert "Pupil" not in text
    assert "Pupil" not in (pack.folder / "report.json").read_text()


def test_the_pack_flags_what_separation_of_duties_depends_on(tmp_path: Path) -> None:
    """Issue 10, items 7, 10, 15: pending grants, privileged accounts no second administrator
    confirmed, a case decided by its opener (only an edited database has one), unapproved
    gallery entries and the pinned profile are in the pack."""
    _, config = make_node(tmp_path)
    keys = NodeKeys.load_or_create(config.key_dir)
    now = time.time()
    with Store(Layout(config.storage.path).database) as store:
        audit = AuditLog(store, keys)
        ensure_admin(store, audit)  # the first-run administrator: not a finding
        pin_profile(store, audit, Profile.SCHOOL)
        users = Users(store)
        users.add("mallory", Role.APPROVER, "mallory-password")  # written past the grants
        Accounts(users, audit).add(Actor("admin", Role.ADMIN), "ivan", Role.INVESTIGATOR)

        def tamper(conn: Connection) -> None:
            conn.execute(insert(schema.cases).values(
                reference="r", legal_basis="b", purpose="p", cameras='["hall"]',
                scope_start=now - 60, scope_end=now, watchlist=0, opened_by="mallory",
                opened_at=now, status="approved", decided_by="mallory", decided_at=now,
                expires_at=now + 60))

        store.write(tamper)
        pack = write_pack(config, store, keys, audit, tmp_path / "pack", actor="inspector",
                          since=now - 86400)
    duties = pack.facts["separation_of_duties"]
    assert duties["profile_pinned"]["profile"] == "school"
    assert [(g["user"], g["status"]) for g in duties["grants"]] == [("ivan", "pending")]
    assert duties["flags"] == [
        "grant 1 (add ivan as investigator) asked by admin is waiting for a second "
        "administrator",
        "mallory holds the approver role without a grant a second administrator confirmed "
        "(given before grants existed, or written into the database)",
        "case 1 was decided by the user who opened it (mallory)",
    ]
    markdown = (pack.folder / "report.md").read_text()
    assert "## Separation of duties" in markdown
    assert "Profile fixed: school since " in markdown
    assert "- **case 1 was decided by the user who opened it (mallory)**" in markdown
