"""The audit log against an attacker who has the database file (or an exported copy).

Every test tampers the way such an attacker would: with plain sqlite3 after dropping the
append-only triggers, or by editing the exported JSONL, and checks that verification names
the place.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from custodes.audit.actions import Action
from custodes.audit.exchange import LogFileError, export_log, read_log, verify_file
from custodes.audit.log import AuditLog, Checkpoint, Entry
from custodes.audit.verify import Kind, VerifyReport, verify_entries, verify_store
from custodes.cli import app
from custodes.config import Config
from custodes.keys import NodeKeys
from custodes.record.cleanup import Retention
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store
from footage import SEGMENT_SECONDS, add_segments, encode_clips, open_node

EVERY = 10  # checkpoint interval in these tests: a few entries give several checkpoints
COUNT = 25  # entries written: checkpoints at 10 and 20, then 5 unsigned


@dataclass
class Node:
    store: Store
    keys: NodeKeys
    audit: AuditLog
    db: Path

    def verify(self) -> VerifyReport:
        return verify_store(self.store, self.keys.public_pem, checkpoint_every=EVERY)

    def sql(self, script: str) -> None:
        """Run SQL as someone with the file: triggers dropped, no custodes code involved."""
        with closing(sqlite3.connect(self.db)) as db:
            db.executescript(
                "DROP TRIGGER IF EXISTS audit_log_no_update;"
                "DROP TRIGGER IF EXISTS audit_log_no_delete;"
                "DROP TRIGGER IF EXISTS audit_checkpoints_no_update;"
                "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete;" + script
            )

    def entries(self) -> list[Entry]:
        with closing(sqlite3.connect(self.db)) as db:
            db.row_factory = sqlite3.Row
            return [Entry.from_row(r) for r in db.execute("SELECT * FROM audit_log ORDER BY seq")]

    def put(self, entries: list[Entry]) -> None:
        """Replace the rows of these entries' seqs with them."""
        self.sql("")
        with closing(sqlite3.connect(self.db)) as db:
            for e in entries:
                db.execute("DELETE FROM audit_log WHERE seq = ?", (e.seq,))
                db.execute(
                    "INSERT INTO audit_log VALUES "
                    "(:seq, :at, :actor, :address, :action, :target, :outcome, :detail, "
                    ":prev_hash, :hash)", e.as_row(),
                )
            db.commit()


def write_entries(audit: AuditLog, count: int) -> None:
    for n in range(1, count + 1):
        audit.record(f"user{n % 3}", Action.PLAYBACK, "cam01", detail={"from": n, "to": n + 60},
                     address="192.0.2.7")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "custodes.db") as store:
        audit = AuditLog(store, keys, checkpoint_every=EVERY)
        write_entries(audit, COUNT)
        yield Node(store, keys, audit, tmp_path / "custodes.db")


def rechained(entries: list[Entry], prev: str) -> list[Entry]:
    """``entries`` with prev_hash and hash recomputed: what someone without the key can do."""
    out = []
    for e in entries:
        linked = replace(e, prev_hash=prev)
        out.append(replace(linked, hash=linked.computed_hash()))
        prev = out[-1].hash
    return out


def messages(report: VerifyReport) -> list[str]:
    return [str(p) for p in report.problems]


# -- the live database ---------------------------------------------------------------------


def test_an_untouched_log_verifies_and_counts_its_unsigned_tail(node: Node) -> None:
    report = node.verify()
    assert report.ok, messages(report)
    assert (report.entries, report.checkpoints, report.signed_through) == (COUNT, 2, 20)
    assert report.unsigned == 5
    assert "5 entries after entry 20 are not covered by a signed checkpoint" in report.notes[0]

    node.audit.checkpoint()
    signed = node.verify()
    assert signed.ok
    assert (signed.checkpoints, signed.signed_through, signed.unsigned) == (3, COUNT, 0)
    assert signed.notes == []


def test_one_modified_row_is_named(node: Node) -> None:
    node.sql("UPDATE audit_log SET target = 'cam02' WHERE seq = 7;")
    assert messages(node.verify()) == ["entry 7: modified (hash does not match its content)"]


def test_a_row_rewritten_with_its_own_hash_recomputed_is_named(node: Node) -> None:
    entry = node.entries()[6]
    forged = replace(entry, actor="someone else")
    node.put([replace(forged, hash=forged.computed_hash())])
    assert messages(node.verify()) == [
        "entry 7: modified (its hash was recomputed, but entry 8 still links to the original)"
    ]


def test_changed_hash_or_prev_hash_fields_are_named(node: Node) -> None:
    node.sql(f"UPDATE audit_log SET hash = '{'a' * 64}' WHERE seq = 4;"
             f"UPDATE audit_log SET prev_hash = '{'b' * 64}' WHERE seq = 14;")
    assert messages(node.verify()) == [
        "entry 4: modified (its hash field was changed; its content still matches the chain)",
        "entry 14: modified (its prev_hash field was changed)",
    ]


def test_a_deleted_row_is_named(node: Node) -> None:
    node.sql("DELETE FROM audit_log WHERE seq = 7;")
    assert messages(node.verify()) == ["entry 7: deleted (missing between entry 6 and entry 8)"]


def test_deleting_the_oldest_rows_is_caught(node: Node) -> None:
    node.sql("DELETE FROM audit_log WHERE seq <= 3;")
    assert messages(node.verify()) == ["entries 1..3: deleted (the log starts at entry 4)"]


def test_a_deleted_row_with_the_rest_renumbered_is_named(node: Node) -> None:
    node.sql("DELETE FROM audit_log WHERE seq = 7;"
             "UPDATE audit_log SET seq = -(seq - 1) WHERE seq > 7;"
             "UPDATE audit_log SET seq = -seq WHERE seq < 0;")
    report = node.verify()
    found = messages(report)
    assert found[0] == ("1 entry deleted between entry 6 and entry 7 (the entries after were "
                        "renumbered to close the gap)")
    assert found[1] == "entries 7..24: moved (each was written as the entry 1 after it)"
    # The signed checkpoints at 10 and 20 now face the entries renumbered into their place.
    assert found[2:] == [
        "checkpoint at entry 10: the signed hash does not match entry 10: the chain between "
        "entry 1 and entry 10 was rewritten after it was signed",
        "checkpoint at entry 20: the signed hash does not match entry 20: the chain between "
        "entry 1 and entry 20 was rewritten after it was signed",
    ]


def test_an_inserted_row_is_named(node: Node) -> None:
    before = node.entries()[5]
    node.sql("UPDATE audit_log SET seq = -(seq + 1) WHERE seq >= 7;"
             "UPDATE audit_log SET seq = -seq WHERE seq < 0;")
    forged = rechained([Entry(7, before.at + 0.5, "admin", None, "config.change", "cam01",
                              "ok", {}, before.hash)], before.hash)
    node.put(forged)
    found = messages(node.verify())
    assert found[0] == "entry 7: inserted (entry 8 links past it to the entry before)"
    assert found[1] == "entries 8..26: moved (each was written as the entry 1 before it)"


def test_two_swapped_rows_are_named(node: Node) -> None:
    node.sql("UPDATE audit_log SET seq = -1 WHERE seq = 7;"
             "UPDATE audit_log SET seq = 7 WHERE seq = 8;"
             "UPDATE audit_log SET seq = 8 WHERE seq = -1;")
    assert messages(node.verify()) == [
        "entry 7: moved (its content was written as entry 8)",
        "entry 8: moved (its content was written as entry 7)",
    ]


def test_a_chain_rewritten_from_some_point_is_caught_by_the_next_checkpoint(node: Node) -> None:
    entries = node.entries()
    tail = [replace(entries[11], actor="nobody"), *entries[12:]]
    node.put(rechained(tail, entries[10].hash))
    report = node.verify()
    # Every hash and link is consistent again; only the signature says otherwise.
    assert messages(report) == [
        "checkpoint at entry 20: the signed hash does not match entry 20: the chain between "
        "entry 11 and entry 20 was rewritten after it was signed"
    ]
    assert report.signed_through == 10


def test_deleting_the_checkpoints_to_hide_a_rewrite_is_caught(node: Node) -> None:
    entries = node.entries()
    node.put(rechained([replace(entries[2], actor="nobody"), *entries[3:]], entries[1].hash))
    node.sql("DELETE FROM audit_checkpoints;")
    report = node.verify()
    assert messages(report) == [
        "checkpoint at entry 10: missing (one is signed every 10 entries; deleted?)",
        "checkpoint at entry 20: missing (one is signed every 10 entries; deleted?)",
    ]
    assert report.signed_through is None
    assert report.unsigned == COUNT


def test_a_forged_checkpoint_is_caught(node: Node) -> None:
    last = node.entries()[-1]
    node.sql(f"INSERT INTO audit_checkpoints (seq, hash, at, signature) "
             f"VALUES ({last.seq}, '{last.hash}', {last.at}, x'{'00' * 64}');")
    report = node.verify()
    assert messages(report) == [
        f"checkpoint at entry {last.seq}: signature does not verify (forged or altered, or "
        "signed with another key)"
    ]
    assert report.signed_through == 20


def test_a_truncated_tail_is_caught_up_to_the_last_checkpoint(node: Node) -> None:
    node.audit.checkpoint()  # the head, 25, is signed
    node.sql("DELETE FROM audit_log WHERE seq > 15;")
    assert messages(node.verify()) == [
        "entries 16..25: deleted from the end of the log (a signed checkpoint covers entry 25, "
        "the log ends at entry 15)",
    ]


def test_the_unsigned_tail_is_honestly_unprotected(node: Node) -> None:
    # Entries 21..25 are after the last checkpoint: deleting them cannot be seen, and the
    # report says beforehand how many entries are in that position.
    assert node.verify().unsigned == 5
    node.sql("DELETE FROM audit_log WHERE seq > 22;")
    report = node.verify()
    assert report.ok
    assert report.unsigned == 2


def test_lines_out_of_order_in_a_file_are_named(node: Node) -> None:
    entries = node.entries()
    shuffled = [*entries[:6], entries[7], entries[6], *entries[8:]]
    with node.store.read() as conn:
        checkpoints = [Checkpoint.from_row(r) for r in conn.exec_driver_sql(
            "SELECT * FROM audit_checkpoints")]
    report = verify_entries(shuffled, checkpoints, node.keys.public_pem, checkpoint_every=EVERY)
    assert messages(report) == ["entry 7: out of order (it comes after entry 8)"]


# Every value the node has ever stored: the hash chain covers them, so renaming one would make
# the logs written before it unreadable by name (and a new action only adds to this list).
STORED_ACTIONS = frozenset({
    "access", "alert.confirm", "alert.dismiss", "audit.export", "audit.sign", "audit.verify",
    "biometric.wipe", "camera.access", "case.add_subject", "case.approve", "case.close",
    "case.expire", "case.list", "case.open", "case.reject", "case.subject_crop", "case.view",
    "client.refused", "config.change", "export", "export.download", "export.expire",
    "face.search", "gallery.approve", "gallery.delete", "gallery.enroll", "gallery.expire",
    "gallery.list", "gallery.update", "gallery.view", "hold.add", "hold.release",
    "inspection.report", "live.view", "login", "logout", "node.start", "node.stop", "playback",
    "profile.change", "profile.pin", "retention.delete", "segment.original",
    "subject_access.approve", "subject_access.expire", "subject_access.export",
    "subject_access.list", "subject_access.photo", "subject_access.record",
    "subject_access.reject", "subject_access.request", "subject_access.view", "token.create",
    "token.revoke", "user.add", "user.grant_cancel", "user.grant_confirm", "user.grant_request",
    "user.password", "user.reset_password", "user.update", "watchlist.alert",
})


def test_no_stored_action_name_changes() -> None:
    assert not STORED_ACTIONS - {a.value for a in Action}


def test_an_entry_stores_the_actions_plain_name(tmp_path: Path) -> None:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "db.sqlite") as store:
        audit = AuditLog(store, keys)
        audit.record_refusal("u", Action.CAMERA_ACCESS, "cam01", "not among the user's cameras",
                             detail={"n": 1})
        with store.read() as conn:
            row = conn.execute(select(schema.audit_log)).one()
        assert (row.action, row.outcome) == ("camera.access", "refused")
        assert json.loads(row.detail) == {"n": 1, "reason": "not among the user's cameras"}
        assert verify_store(store, keys.public_pem).ok


def test_detail_with_number_keys_verifies(tmp_path: Path) -> None:
    # JSON turns the keys into strings, which sort differently ("10" < "9").
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with Store(tmp_path / "db.sqlite") as store:
        audit = AuditLog(store, keys)
        audit.record("u", Action.PLAYBACK, detail={"per_hour": {9: 3, 10: 1}})
        assert verify_store(store, keys.public_pem).ok


# -- exported files ------------------------------------------------------------------------


def test_an_exported_log_verifies_offline_with_only_the_public_key(
    node: Node, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    done = export_log(node.audit, out, actor="cli:inspector", node="school-1")

    # The export is itself on record, and the head is signed before writing.
    assert (done.first_seq, done.last_seq, done.checkpoints) == (1, COUNT + 1, 3)
    exported = read_log(out)
    assert exported.entries[-1].action == "audit.export"
    assert exported.header["node"] == "school-1"

    report = verify_file(out, node.keys.public_pem)
    assert report.ok, messages(report)
    assert report.unsigned == 0
    embedded = verify_file(out)  # no key supplied: consistent, but says whose key it trusted
    assert embedded.ok
    assert "embedded in the file" in embedded.notes[0]

    other = NodeKeys.load_or_create(tmp_path / "other-keys")
    wrong = verify_file(out, other.public_pem)
    assert not wrong.ok
    assert messages(wrong)[0].startswith("wrong key: the file's public key (SHA256:")
    assert {p.kind for p in wrong.problems} == {Kind.BAD_SIGNATURE}


def edit_lines(path: Path, edit: dict[int, dict[str, object] | None]) -> None:
    """Change fields of lines (0: the header), or drop them (None)."""
    lines = path.read_text().splitlines()
    out = []
    for n, line in enumerate(lines):
        if n not in edit:
            out.append(line)
        elif (change := edit[n]) is not None:
            out.append(json.dumps({**json.loads(line), **change}))
    path.write_text("\n".join(out) + "\n")


def entry_lines(path: Path) -> dict[int, int]:
    """seq -> line number of each entry."""
    return {json.loads(line)["seq"]: n for n, line in enumerate(path.read_text().splitlines())
            if json.loads(line)["type"] == "entry"}


def test_an_edited_export_is_caught(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    export_log(node.audit, out, actor="cli:inspector")
    lines = entry_lines(out)

    edit_lines(out, {lines[3]: {"actor": "someone else"}})
    assert messages(verify_file(out, node.keys.public_pem)) == [
        "entry 3: modified (hash does not match its content)"
    ]


def test_cutting_or_extending_an_export_is_caught(node: Node, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl"
    export_log(node.audit, cut, actor="cli:inspector", since=None)
    text = cut.read_text()
    last = entry_lines(cut)[COUNT + 1]
    edit_lines(cut, {n: None for n in range(last, len(text.splitlines()))})
    found = messages(verify_file(cut, node.keys.public_pem))
    assert "entry 26: deleted from the end of the file" in found[0]

    longer = tmp_path / "longer.jsonl"
    longer.write_text(text)
    tail = read_log(longer).entries[-1]
    extra = rechained([Entry(tail.seq + 1, tail.at + 1, "admin", None, "user.change", "bob",
                             "ok", {})], tail.hash)[0]
    with longer.open("a") as f:
        f.write(json.dumps({"type": "entry", **extra.__dict__}) + "\n")
    assert messages(verify_file(longer, node.keys.public_pem)) == [
        "entry 27: appended (the signed header ends the export at entry 26)"
    ]


def test_an_excerpt_verifies_and_its_header_is_signed(node: Node, tmp_path: Path) -> None:
    entries = node.entries()
    out = tmp_path / "excerpt.jsonl"
    done = export_log(node.audit, out, actor="cli:inspector", since=entries[4].at,
                      until=entries[14].at)
    assert (done.first_seq, done.last_seq, done.checkpoints) == (5, 14, 1)
    assert verify_file(out, node.keys.public_pem).ok

    edit_lines(out, {0: {"first_seq": 1}})
    found = messages(verify_file(out, node.keys.public_pem))
    assert found[0].startswith("the header's signature does not verify")


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"type": "header", "format": "custodes-audit-log/1"}\nnot json\n')
    with pytest.raises(LogFileError, match=r"x.jsonl line 2: not an audit log line"):
        read_log(path)


def test_an_export_never_overwrites(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "taken.jsonl"
    out.write_text("someone else's")
    with pytest.raises(FileExistsError):
        export_log(node.audit, out, actor="cli:x")
    assert out.read_text() == "someone else's"


# -- retention passes are on record --------------------------------------------------------


def test_each_retention_pass_is_audited(tmp_path: Path) -> None:
    config = Config.model_validate({
        "sites": {"s": {"name": "S"}},
        "cameras": {"cam01": {"site": "s", "location": "corridor", "purpose": "test",
                              "main_url": "rtsp://192.0.2.1/x", "record": {"retention_hours": 1}}},
    })
    clips = encode_clips(tmp_path / "clips", count=1)
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    now = 1_700_000_000.0
    with open_node(tmp_path / "var") as (store, layout):
        add_segments(store, layout, "cam01", [now - 7200, now - 7200 + SEGMENT_SECONDS, now],
                     clips)
        audit = AuditLog(store, keys)
        retention = Retention(store, layout, config, clock=lambda: now, audit=audit)
        [done] = retention.run_once()
        with store.read() as conn:
            [entry] = [Entry.from_row(r) for r in conn.exec_driver_sql("SELECT * FROM audit_log")]
    assert (entry.actor, entry.action, entry.target) == ("system", "retention.delete", "age")
    assert entry.detail["pass"] == done.id
    assert entry.detail["segments"] == 2
    assert entry.detail["cameras"]["cam01"]["segments"] == 2


# -- the command line ----------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def configured(tmp_path: Path) -> tuple[Path, Path]:
    """(config file, database) of a node with a written audit log."""
    config = tmp_path / "custodes.yaml"
    config.write_text(
        "node:\n  name: school-1\nsites:\n  s:\n    name: S\ncameras:\n  door:\n    site: s\n"
        "    location: entrance\n    purpose: Front door\n    main_url: rtsp://127.0.0.1:9/x\n"
        "storage:\n  path: var\n"
    )
    layout = Layout(tmp_path / "var")
    keys = NodeKeys.load_or_create(tmp_path / "var-keys")
    with Store(layout.database) as store:
        write_entries(AuditLog(store, keys), 120)  # one periodic checkpoint, at 100
    return config, layout.database


def test_cli_verifies_the_node_log_and_names_a_tampered_entry(
    configured: tuple[Path, Path]
) -> None:
    config, db = configured
    ok = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "audit log of school-1: OK — 120 entries (entries 1..120), 1 checkpoints" in ok.output
    assert "20 unsigned after the last checkpoint" in ok.output

    with closing(sqlite3.connect(db)) as raw:
        raw.executescript("DROP TRIGGER audit_log_no_update;"
                          "UPDATE audit_log SET outcome = 'refused' WHERE seq = 42;")
    bad = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert bad.exit_code == 1
    assert "FAILED — 1 problems" in bad.output
    assert "entry 42: modified (hash does not match its content)" in bad.output


def test_cli_exports_the_log_for_offline_verification(
    configured: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _ = configured
    out = tmp_path / "audit.jsonl"
    exported = runner.invoke(app, ["audit", "export", "-c", str(config), str(out)])
    assert exported.exit_code == 0, exported.output
    assert "entries 1..121, 2 signed checkpoints" in exported.output
    assert read_log(out).entries[-1].actor.startswith("cli:")

    pub = tmp_path / "var-keys" / "signing.pub"
    ok = runner.invoke(app, ["audit", "verify", "--file", str(out), "--key", str(pub)])
    assert ok.exit_code == 0, ok.output
    assert "OK — 121 entries" in ok.output

    other = NodeKeys.load_or_create(tmp_path / "other")
    wrong = runner.invoke(app, ["audit", "verify", "--file", str(out), "--key",
                                str(other.folder / "signing.pub")])
    assert wrong.exit_code == 1
    assert "wrong key" in wrong.output

    neither = runner.invoke(app, ["audit", "verify"])
    assert neither.exit_code == 2
