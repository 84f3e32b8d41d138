"""The inspection pack: facts from the node's own records, signed, verifiable offline."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from custodes.audit.log import SYSTEM, AuditLog
from custodes.audit.report import write_pack
from custodes.auth.users import ensure_admin
from custodes.cli import app
from custodes.config import Config, load_config
from custodes.keys import NodeKeys
from custodes.record.holds import add_hold
from custodes.record.layout import Layout
from custodes.record.manifest import verify_bundle
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
        audit.record("dora", "face.search", "case 1", outcome="refused",
                     detail={"reason": "the school profile does not allow face search"})
        audit.record("eve", "login", "eve", outcome="failed", address="127.0.0.1")
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
            audit.record(SYSTEM, "test", str(i))
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
