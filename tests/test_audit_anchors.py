"""The audit log against its own administrator: cut back, forged, and then offered for signing.

The attack of issue 10, item 1, performed as written: with plain sqlite3 on the database file,
drop the append-only triggers, delete entries 32..78 and every checkpoint, insert a forged
entry 32 with a recomputed hash, then ask the node to sign (an export, a report, a stop). The
node keeps what it signed outside the database (``audit-anchors.jsonl`` in its key folder),
so verification says FAILED and every signature is refused, on record and with a non-zero
exit.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import stat
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from custodes.app import Node
from custodes.audit import exchange
from custodes.audit.actions import Action
from custodes.audit.anchor import ANCHOR_FILE, Anchor, AnchorFile
from custodes.audit.exchange import export_log, read_log, verify_file
from custodes.audit.log import AuditLog, Entry, Outcome, SigningRefused
from custodes.audit.verify import Kind, verify_store
from custodes.cli import app
from custodes.config import load_config
from custodes.keys import NodeKeys
from custodes.record.layout import Layout
from custodes.record.manifest import MANIFEST, SIGNATURE, key_fingerprint, verify_bundle
from custodes.store.db import Store

runner = CliRunner()

TRIGGERS = ("audit_log_no_update", "audit_log_no_delete", "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete")


@dataclass
class Box:
    """A node's files, as its administrator sees them."""

    config: Path
    db: Path
    keys: Path

    @property
    def anchors(self) -> Path:
        return self.keys / ANCHOR_FILE

    def cli(self, *args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    def sql(self, script: str) -> None:
        """What someone with write access to the database does: no custodes code involved."""
        with closing(sqlite3.connect(self.db)) as db:
            db.executescript("".join(f"DROP TRIGGER IF EXISTS {t};" for t in TRIGGERS) + script)

    def entries(self) -> list[Entry]:
        with closing(sqlite3.connect(self.db)) as db:
            db.row_factory = sqlite3.Row
            return [Entry.from_row(r) for r in db.execute("SELECT * FROM audit_log ORDER BY seq")]

    def forge(self, entry: Entry) -> Entry:
        """Insert ``entry`` after the current last one, its links and hash recomputed."""
        last = self.entries()[-1]
        linked = replace(entry, seq=last.seq + 1, prev_hash=last.hash)
        forged = replace(linked, hash=linked.computed_hash())
        row = forged.as_row()
        with closing(sqlite3.connect(self.db)) as db:
            db.execute("INSERT INTO audit_log VALUES (:seq, :at, :actor, :address, :action, "
                       ":target, :outcome, :detail, :prev_hash, :hash)", row)
            db.commit()
        return forged

    def refusals(self) -> list[Entry]:
        return [e for e in self.entries()
                if e.action == Action.AUDIT_SIGN and e.outcome == Outcome.REFUSED]


def write_config(root: Path) -> Path:
    config = root / "custodes.yaml"
    config.write_text(
        "node:\n  name: school-1\nsites:\n  s:\n    name: S\ncameras:\n  door:\n    site: s\n"
        "    location: entrance\n    purpose: Front door\n    enabled: false\n"
        "    main_url: rtsp://127.0.0.1:9/x\nstorage:\n  path: var\n"
    )
    return config


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """78 entries: 31 ordinary ones, then an administrator's day (32..77), then an export of
    the log (78), whose checkpoint is made at export and so is never "due"."""
    config = write_config(tmp_path)
    layout = Layout(tmp_path / "var")
    keys = NodeKeys.load_or_create(tmp_path / "var-keys")
    with Store(layout.database) as store:
        audit = AuditLog(store, keys)
        for n in range(31):
            audit.record("viewer", Action.PLAYBACK, "door", detail={"from": n})
        for name in ("investigator2", "approver2"):
            audit.record("admin", Action.USER_ADD, name, detail={"role": name[:-1]})
        audit.record("admin", Action.CASE_APPROVE, "case 7")
        audit.record("admin", Action.EXPORT, "door", detail={"unredacted": True})
        for n in range(42):
            audit.record("admin", Action.PLAYBACK, "door", detail={"from": n})
    box = Box(config, layout.database, tmp_path / "var-keys")
    code, out = box.cli("audit", "export", "-c", str(config), str(tmp_path / "before.jsonl"))
    assert code == 0, out
    assert len(box.entries()) == 78
    return box


def truncate_and_forge(box: Box) -> Entry:
    """The attack: entries 32..78 and every checkpoint deleted, a forged 32 in their place."""
    box.sql("DELETE FROM audit_log WHERE seq >= 32; DELETE FROM audit_checkpoints;")
    assert [e.seq for e in box.entries()][-1] == 31
    first = box.entries()[0]
    return box.forge(replace(first, at=first.at + 3600, actor="admin", action="config.change",
                             target="school-1", detail={}))


# -- the attack, through the real command line ---------------------------------------------


def test_truncating_the_log_and_its_checkpoints_is_failed(box: Box) -> None:
    box.sql("DELETE FROM audit_log WHERE seq >= 32; DELETE FROM audit_checkpoints;")

    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1, out
    assert "audit log of school-1: FAILED" in out
    assert "entries 32..78: deleted from the end of the log (the node signed entry 78" in out
    assert "kept in the anchor file; the log ends at entry 31)" in out


def test_a_forged_head_is_failed_and_never_signed(box: Box, tmp_path: Path) -> None:
    anchors_before = box.anchors.read_bytes()
    forged = truncate_and_forge(box)
    assert forged.seq == 32

    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1, out
    assert "FAILED" in out
    assert "entries 33..78: deleted from the end of the log" in out

    # The node refuses to sign the forged head for an export: no file, exit 3.
    after = tmp_path / "after.jsonl"
    code, out = box.cli("audit", "export", "-c", str(box.config), str(after))
    assert code == 3, out
    assert "refuses to sign the audit log" in out
    assert "the node signed entry 78" in out
    assert not after.exists()

    # ... nor for an inspection pack.
    pack = tmp_path / "pack"
    code, out = box.cli("report", "-c", str(box.config), str(pack))
    assert code == 1, out
    assert "report refused" in out
    assert not pack.exists()

    # Nothing was signed: the anchor file is as it was, and no checkpoint covers the forgery.
    assert box.anchors.read_bytes() == anchors_before
    with closing(sqlite3.connect(box.db)) as db:
        assert db.execute("SELECT count(*) FROM audit_checkpoints").fetchone() == (0,)
    # Each refusal is itself on record, with the reason.
    refusals = box.refusals()
    assert len(refusals) == 2
    assert all("entry 78" in r.detail["reason"] for r in refusals)

    # The genuine export made before still verifies with the node's key, and, kept off the
    # box, it witnesses against the forged log.
    key = str(box.keys / "signing.pub")
    before = str(tmp_path / "before.jsonl")
    code, out = box.cli("audit", "verify", "--file", before, "--key", key)
    assert code == 0, out
    code, out = box.cli("audit", "verify", "-c", str(box.config), "--witness", before)
    assert code == 1
    assert "kept in " in out
    assert "before.jsonl" in out


def test_a_node_stop_does_not_sign_a_forged_head(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    node = Node(config)
    node.start(web=False)
    for n in range(40):
        node.audit.record("admin", Action.USER_ADD, f"u{n}")
    node.stop()
    box = Box(config_path, node.layout.database, config.key_dir)
    signed = AnchorFile.in_folder(config.key_dir).last()
    assert signed is not None
    assert signed.seq == len(box.entries())

    box.sql("DELETE FROM audit_log WHERE seq >= 20; DELETE FROM audit_checkpoints;")
    box.forge(replace(box.entries()[-1], actor="admin", action="node.stop", detail={}))

    again = Node(config)
    again.start(web=False)  # the start's signature is refused (and logged), the node runs
    again.stop()  # so is the stop's
    assert AnchorFile.in_folder(config.key_dir).last() == signed
    reasons = [r.detail for r in box.refusals()]
    assert [r["occasion"] for r in reasons] == ["start", "stop"]
    code, out = box.cli("audit", "verify", "-c", str(config_path))
    assert code == 1, out
    assert f"entry {signed.seq}" in out


# -- what the anchors catch, one by one -----------------------------------------------------


def test_an_anchored_entry_rewritten_with_recomputed_hashes_is_caught(box: Box) -> None:
    # Rewrite entry 40 on, re-chain everything after, delete the checkpoints: the chain is
    # consistent again, and only the anchor (at 78) knows.
    entries = box.entries()
    box.sql("DELETE FROM audit_log WHERE seq >= 40; DELETE FROM audit_checkpoints;")
    for e in entries[39:]:
        box.forge(replace(e, actor="nobody") if e.seq == 40 else e)
    assert len(box.entries()) == 78

    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1, out
    assert "entry 78: not the one the node signed at" in out
    assert "the log up to it was rewritten" in out
    with Store(box.db) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(box.keys))
        with pytest.raises(SigningRefused, match="entry 78 is not the one the node signed"):
            audit.checkpoint()
        # A periodic checkpoint is refused the same way, without refusing the access.
        audit.checkpoint_every = 80
        assert audit.record("viewer", Action.PLAYBACK, "door") == 80
    assert [r.detail["occasion"] for r in box.refusals()] == ["on demand", "periodic"]


def test_the_log_must_extend_the_anchor_entry_by_entry(box: Box) -> None:
    # Entries after the last anchor are the chain's alone to protect; the node still signs
    # nothing whose chain from the anchor does not hold.
    with Store(box.db) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(box.keys))
        for _ in range(5):
            audit.record("viewer", Action.PLAYBACK, "door")
        box.sql("UPDATE audit_log SET target = 'yard' WHERE seq = 81;")
        with pytest.raises(SigningRefused, match="entry 81 does not follow from entry 80"):
            audit.checkpoint()


def test_a_reordered_anchor_file_is_caught(box: Box) -> None:
    with Store(box.db) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(box.keys))
        audit.record("viewer", Action.PLAYBACK, "door")
        audit.checkpoint()
    lines = box.anchors.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [78, 79]
    box.anchors.write_text("\n".join(reversed(lines)) + "\n")
    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1
    assert "the anchor for entry 78 follows the one for entry 79; the node only appends newer " \
        "anchors, so the file was edited" in out


def test_a_forged_anchor_is_caught(box: Box) -> None:
    lines = box.anchors.read_text().splitlines()
    last = json.loads(lines[-1])
    box.anchors.write_text("\n".join([*lines[:-1], json.dumps({**last, "hash": "f" * 64})])
                           + "\n")
    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1
    assert "anchor for entry 78 in the anchor file: signature does not verify" in out
    with Store(box.db) as store, pytest.raises(SigningRefused, match="does not carry"):
        AuditLog(store, NodeKeys.load_or_create(box.keys)).checkpoint()


def test_an_anchor_forged_for_the_forged_head_is_not_taken_for_a_signature(
    box: Box, tmp_path: Path
) -> None:
    # Someone who can write the anchor file but not read the key appends an "anchor" for
    # their forged head, with a signature they cannot make.
    forged = truncate_and_forge(box)
    fake = Anchor(forged.seq, forged.hash, forged.at, b"\0" * 64)
    with box.anchors.open("a") as f:
        f.write(json.dumps(fake.to_json()) + "\n")
    code, out = box.cli("audit", "export", "-c", str(box.config), str(tmp_path / "x.jsonl"))
    assert code == 3, out
    assert "does not carry this node's signature" in out
    assert not (tmp_path / "x.jsonl").exists()
    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1
    assert "anchor for entry 32 in the anchor file: signature does not verify" in out


def test_a_deleted_anchor_file_is_failed_and_a_broken_log_is_not_adopted(box: Box) -> None:
    box.anchors.unlink()
    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 1
    assert f"{box.anchors}: missing, yet the log holds 1 signed checkpoints" in out

    # Without its file, the node starts a new one only over a log that verifies.
    box.sql("DELETE FROM audit_log WHERE seq = 50;")
    with Store(box.db) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(box.keys))
        with pytest.raises(SigningRefused, match="no anchor file, and the log does not verify"):
            audit.checkpoint()
    assert not box.anchors.exists()


def test_a_log_from_before_anchors_is_adopted_once_it_verifies(box: Box) -> None:
    box.anchors.unlink()  # as a log written by a version without anchors
    with Store(box.db) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(box.keys))
        anchor = audit.checkpoint()
    assert anchor is not None
    assert AnchorFile.in_folder(box.keys).read() == [anchor]
    code, out = box.cli("audit", "verify", "-c", str(box.config))
    assert code == 0, out
    assert "1 anchors outside the database, the last at entry 78" in out


# -- the anchor file itself -----------------------------------------------------------------


def test_the_anchor_file_is_private_and_only_grows_in_order(tmp_path: Path) -> None:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "db.sqlite") as store:
        audit = AuditLog(store, keys, checkpoint_every=5)
        for _ in range(12):
            audit.record("u", Action.PLAYBACK)
        audit.checkpoint()
    kept = AnchorFile.in_folder(keys.folder)
    assert [a.seq for a in kept.read()] == [5, 10, 12]
    assert stat.S_IMODE(os.stat(kept.path).st_mode) == 0o600
    # An older anchor arriving late (another process's) is not appended behind a newer one.
    first = kept.read()[0]
    assert kept.append(first) is False
    assert [a.seq for a in kept.read()] == [5, 10, 12]


# -- exports and packs carry the latest anchor ----------------------------------------------


def test_exports_and_packs_carry_the_anchor_and_witness_a_later_truncation(
    box: Box, tmp_path: Path
) -> None:
    key = str(box.keys / "signing.pub")
    export = read_log(tmp_path / "before.jsonl")
    anchor = Anchor.from_json(export.header["anchor"])
    assert (anchor.seq, anchor.hash) == (78, box.entries()[77].hash)

    pack = tmp_path / "pack"
    code, out = box.cli("report", "-c", str(box.config), str(pack))
    assert code == 0, out
    manifest = json.loads((pack / MANIFEST).read_text())
    assert manifest["audit_anchor"]["seq"] == len(box.entries())
    facts = json.loads((pack / "report.json").read_text())
    assert facts["audit_chain"]["anchor"] == manifest["audit_anchor"]
    assert verify_bundle(pack, Path(key).read_bytes()).verified

    # Even with the key folder restored to match the forgery (anchor file deleted), the copies
    # held off the box still tell.
    copy = tmp_path / "anchors-copy.jsonl"  # a copy of the anchor file, taken off the box
    copy.write_bytes(box.anchors.read_bytes())
    truncate_and_forge(box)
    box.anchors.unlink()
    code, out = box.cli("audit", "verify", "-c", str(box.config), "--witness", str(copy))
    assert code == 1
    assert "entries 33..80: deleted from the end of the log (the node signed entry 80" in out
    code, out = box.cli("audit", "verify", "-c", str(box.config), "--witness", str(pack),
                        "--witness", str(tmp_path / "before.jsonl"))
    assert code == 1
    assert "deleted from the end of the log" in out
    assert str(pack) in out


def test_an_export_whose_header_anchor_is_beyond_its_end_was_cut(box: Box, tmp_path: Path) -> None:
    out = tmp_path / "full.jsonl"
    with Store(box.db) as store:
        export_log(AuditLog(store, NodeKeys.load_or_create(box.keys)), out, actor="cli:x")
    keys = NodeKeys.load_or_create(box.keys)
    # Cut the file and re-sign its header as root could (with the node's key) but keep the
    # anchor: the anchor outlives the cut.
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    kept = [json.loads(line) for line in lines[1:] if json.loads(line).get("seq", 0) <= 40]
    entries = [k for k in kept if k["type"] == "entry"]
    header.update(last_seq=40, last_hash=entries[-1]["hash"])
    header["signature"] = exchange._b64(keys.sign(exchange._header_message(header)))
    out.write_text("".join(json.dumps(x) + "\n" for x in [header, *kept]))
    report = verify_file(out, keys.public_pem)
    assert not report.ok
    assert any(p.kind == Kind.TRUNCATED and "entries 41..79" in p.message
               for p in report.problems)

    # Root drops the anchor too and re-signs: the file is consistent again, and only a copy
    # kept elsewhere (the export made before) still tells.
    header["anchor"] = None
    header["signature"] = exchange._b64(keys.sign(exchange._header_message(header)))
    out.write_text("".join(json.dumps(x) + "\n" for x in [header, *kept]))
    assert verify_file(out, keys.public_pem).ok
    code, text = box.cli("audit", "verify", "--file", str(out), "--key",
                         str(box.keys / "signing.pub"), "--witness",
                         str(tmp_path / "before.jsonl"))
    assert code == 1, text
    assert "entries 41..78: deleted from the end of the log (the node signed entry 78" in text


# -- issue 10, item 9: an export re-signed with a swapped key -------------------------------


def test_export_verify_without_a_key_is_unverified(box: Box, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    code, out = box.cli("report", "-c", str(box.config), str(pack))
    assert code == 0, out
    code, out = box.cli("export", "verify", str(pack))
    assert code == 4, out
    assert "UNVERIFIED" in out
    assert "OK" not in out

    # Re-signed with a swapped key: the manifest says what the forger wants, names their key,
    # and drops the audit anchor they cannot sign.
    forger = NodeKeys.load_or_create(tmp_path / "forger")
    manifest = json.loads((pack / MANIFEST).read_text())
    manifest.update(created_by="someone else", audit_anchor=None,
                    public_key_fingerprint=key_fingerprint(forger.public_pem))
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (pack / MANIFEST).write_bytes(data)
    (pack / SIGNATURE).write_bytes(forger.sign(data))
    (pack / "signing.pub").write_bytes(forger.public_pem)
    code, out = box.cli("export", "verify", str(pack))
    assert code == 4, out
    assert "UNVERIFIED" in out
    code, out = box.cli("export", "verify", str(pack), "--key", str(box.keys / "signing.pub"))
    assert code == 1, out
    assert "FAILED" in out
    assert "wrong key" in out


def test_audit_verify_of_a_file_without_a_key_is_unverified(box: Box, tmp_path: Path) -> None:
    code, out = box.cli("audit", "verify", "--file", str(tmp_path / "before.jsonl"))
    assert code == 4, out
    assert "UNVERIFIED" in out


# -- issue 10, item 21: failed command-line sign-ins ----------------------------------------


def test_a_failed_cli_sign_in_is_attributed_to_the_local_account(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTODES_PASSWORD", "not-the-password")
    code, out = box.cli("case", "list", "-c", str(box.config), "-u", "approver2")
    assert code == 3, out
    [failed] = [e for e in box.entries() if e.action == "login"]
    assert failed.outcome == "failed"
    assert failed.actor == f"cli:{getpass.getuser()}"
    assert failed.target == "approver2"
    assert failed.detail == {"via": "cli", "claimed": "approver2"}


def test_an_untouched_log_still_verifies_against_its_anchors(box: Box) -> None:
    with Store(box.db) as store:
        report = verify_store(store, NodeKeys.load_or_create(box.keys).public_pem,
                              anchors=AnchorFile.in_folder(box.keys))
    assert report.ok, [str(p) for p in report.problems]
    assert (report.anchors, report.anchored_through, report.unsigned) == (1, 78, 0)
