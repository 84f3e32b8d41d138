"""Signed export folders on real footage: made whole or not at all, on record, and any change
to them named by verification."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from custodes.audit.actions import Action
from custodes.audit.log import AuditLog, Entry
from custodes.auth.roles import Actor, Role
from custodes.cli import app
from custodes.keys import NodeKeys
from custodes.media import ffmpeg_exe, probe
from custodes.record.bundle import ExportBundle, create_export
from custodes.record.layout import Layout
from custodes.record.manifest import MANIFEST, key_fingerprint, verify_bundle
from custodes.record.playback import ExportError
from custodes.store import schema
from custodes.store.db import Store
from footage import SEGMENT_SECONDS, add_segments, encode_clips, open_node

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
OPERATOR = Actor("alice", Role.OPERATOR, address="192.0.2.10")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return encode_clips(tmp_path_factory.mktemp("clips"), count=3)


@dataclass
class Recorder:
    store: Store
    layout: Layout
    keys: NodeKeys
    audit: AuditLog

    def export(self, out: Path, **kwargs: Any) -> ExportBundle:
        return create_export(self.store, self.layout, self.keys, self.audit, "cam01", T0 + 1,
                             T0 + 5, out, actor=OPERATOR, node="school-1", **kwargs)

    def audit_entries(self) -> list[Entry]:
        with self.store.read() as conn:
            return [Entry.from_row(r) for r in conn.execute(select(schema.audit_log))]


@pytest.fixture
def recorder(tmp_path: Path, clips: list[Path]) -> Iterator[Recorder]:
    keys = NodeKeys.load_or_create(tmp_path / "keys")
    with open_node(tmp_path / "var") as (store, layout):
        add_segments(store, layout, "cam01", [T0 + n * SEGMENT_SECONDS for n in range(3)], clips)
        yield Recorder(store, layout, keys, AuditLog(store, keys))


def test_an_export_is_a_signed_audited_folder(recorder: Recorder, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "complaint-17"
    out.parent.mkdir()

    bundle = recorder.export(out, case="2026-17")

    video = "cam01_20231114T221321Z_20231114T221325Z.mp4"
    assert sorted(p.name for p in out.iterdir()) == [
        video, "manifest.json", "manifest.sig", "signing.pub"
    ]
    assert [p.name for p in out.parent.iterdir()] == ["complaint-17"]  # no leftovers
    assert bundle.video == out / video
    assert probe(bundle.video).duration == bundle.duration > 3.9
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == bundle.manifest
    assert {k: manifest[k] for k in ("format", "node", "camera", "start", "end", "created_by",
                                     "case", "redaction")} == {
        "format": "custodes-export/1", "node": "school-1", "camera": "cam01",
        "start": "2023-11-14T22:13:21.000Z", "end": "2023-11-14T22:13:25.000Z",
        "created_by": "alice", "case": "2026-17", "redaction": {"applied": False},
    }
    assert manifest["files"][0]["name"] == video
    assert manifest["files"][0]["bytes"] == bundle.video.stat().st_size
    assert manifest["public_key_fingerprint"] == key_fingerprint(recorder.keys.public_pem)

    [entry] = recorder.audit_entries()
    assert (entry.seq, entry.actor, entry.action, entry.target, entry.outcome, entry.address) \
        == (bundle.audit_seq, "alice", "export", "cam01", "ok", "192.0.2.10")
    assert entry.detail["case"] == "2026-17"
    assert entry.detail["files"] == manifest["files"]

    report = verify_bundle(out, recorder.keys.public_pem)
    assert report.ok, report.problems
    assert (report.key_source, report.signature_ok, report.files_ok) == ("supplied", True, [video])


def test_verification_names_what_was_altered(recorder: Recorder, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    bundle = recorder.export(out)
    key = recorder.keys.public_pem
    name = bundle.video.name

    data = bytearray(bundle.video.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the pictures
    bundle.video.write_bytes(bytes(data))
    assert verify_bundle(out, key).problems == [
        f"{name}: altered (SHA-256 differs from the manifest)"
    ]

    (out / "notes.txt").write_text("added later")
    bundle.video.unlink()
    assert verify_bundle(out, key).problems == [
        f"{name}: missing", "notes.txt: extra file, not in the manifest"
    ]


def test_an_altered_manifest_fails_its_signature(recorder: Recorder, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    recorder.export(out)
    manifest = out / MANIFEST
    manifest.write_text(manifest.read_text().replace('"case": null', '"case": "other"'))

    report = verify_bundle(out, recorder.keys.public_pem)
    assert not report.signature_ok
    assert report.problems == [
        "manifest.json: altered, or signed with another key (its signature does not verify "
        "with the key supplied)"
    ]
    # Without a key of one's own, the folder's signing.pub is used, and the report says so.
    embedded = verify_bundle(out)
    assert embedded.problems == ["manifest.json: altered (its signature does not verify)"]
    assert embedded.key_source == "embedded"


def test_another_nodes_key_is_named(recorder: Recorder, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    recorder.export(out)
    other = NodeKeys.load_or_create(tmp_path / "other-keys")

    wrong = verify_bundle(out, other.public_pem)
    assert wrong.problems == [
        f"wrong key: the manifest was signed with another key "
        f"({key_fingerprint(recorder.keys.public_pem)}), not the one supplied"
    ]
    unsupplied = verify_bundle(out)
    assert unsupplied.ok
    assert "folder's own signing.pub" in unsupplied.notes[0]

    (out / "signing.pub").write_bytes(other.public_pem)  # swapped to mislead
    assert verify_bundle(out, recorder.keys.public_pem).problems == [
        "signing.pub: replaced (it is not the key that signed the manifest)"
    ]


def blur(src: Path, dst: Path) -> dict[str, object]:
    """A real (if crude) redaction: the whole picture blurred by ffmpeg."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i",
                    str(src), "-vf", "boxblur=10", "-c:v", "libx264", "-preset", "ultrafast",
                    "-f", "mp4", str(dst)], check=True)
    return {"method": "boxblur", "regions": "whole picture"}


def test_a_transform_makes_the_video_and_describes_the_redaction(
    recorder: Recorder, tmp_path: Path
) -> None:
    out = tmp_path / "redacted"
    bundle = recorder.export(out, transform=blur)

    assert bundle.manifest["redaction"] == {
        "applied": True, "method": "boxblur", "regions": "whole picture"
    }
    assert recorder.audit_entries()[0].detail["redaction"] == bundle.manifest["redaction"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "redacted", "var"]
    assert verify_bundle(out, recorder.keys.public_pem).ok


def test_failed_exports_are_on_record_and_leave_nothing(
    recorder: Recorder, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ExportError, match="exists already"):
        recorder.export(taken)

    def broken(src: Path, dst: Path) -> dict[str, object]:
        raise RuntimeError("the redactor crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        recorder.export(tmp_path / "never", transform=broken)
    with pytest.raises(ExportError, match="no recordings of cam09"):
        create_export(recorder.store, recorder.layout, recorder.keys, recorder.audit, "cam09",
                      T0, T0 + 4, tmp_path / "none", actor=OPERATOR)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "taken", "var"]
    entries = recorder.audit_entries()
    assert [(e.action, e.target, e.outcome) for e in entries] == [
        ("export", "cam01", "failed"), ("export", "cam01", "failed"),
        ("export", "cam09", "failed"),
    ]
    assert "the redactor crashed" in entries[1].detail["error"]


# -- the command line ----------------------------------------------------------------------

runner = CliRunner()


def test_cli_creates_and_verifies_a_bundle(tmp_path: Path, clips: list[Path]) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(
        "sites:\n  s:\n    name: S\ncameras:\n  door:\n    site: s\n    location: entrance\n"
        "    purpose: Front door\n    main_url: rtsp://127.0.0.1:9/x\nstorage:\n  path: var\n"
    )
    with open_node(tmp_path / "var") as (store, layout):
        add_segments(store, layout, "door", [T0, T0 + SEGMENT_SECONDS], clips)
    out = tmp_path / "out"

    made = runner.invoke(app, [
        "export", "create", "-c", str(config), "--camera", "door", "--from",
        "2023-11-14T22:13:20Z", "--to", "2023-11-14T22:13:24Z", "--case", "c-1", "--unredacted",
        str(out),
    ])
    assert made.exit_code == 0, made.output
    assert "audit entry 1" in made.output
    assert "not redacted" in made.output

    key = tmp_path / "var-keys" / "signing.pub"
    ok = runner.invoke(app, ["export", "verify", str(out), "--key", str(key)])
    assert ok.exit_code == 0, ok.output
    assert "OK — 1 files match the signed manifest (supplied key)" in ok.output
    assert "case c-1, not redacted" in ok.output

    video = next(out.glob("*.mp4"))
    data = bytearray(video.read_bytes())
    data[2000] ^= 0xFF
    video.write_bytes(bytes(data))
    bad = runner.invoke(app, ["export", "verify", str(out), "--key", str(key)])
    assert bad.exit_code == 1
    assert f"{video.name}: altered (SHA-256 differs from the manifest)" in bad.output


def test_cli_exports_are_redacted_unless_asked_otherwise(tmp_path: Path, clips: list[Path]) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(
        "sites:\n  s:\n    name: S\ncameras:\n  door:\n    site: s\n    location: entrance\n"
        "    purpose: Front door\n    main_url: rtsp://127.0.0.1:9/x\n"
        "    privacy_zones: [[[0, 0], [0.5, 0], [0.5, 0.5]]]\nstorage:\n  path: var\n"
    )
    with open_node(tmp_path / "var") as (store, layout):
        add_segments(store, layout, "door", [T0], clips)
    out = tmp_path / "out"

    made = runner.invoke(app, [
        "export", "create", "-c", str(config), "--camera", "door", "--from",
        "2023-11-14T22:13:20Z", "--to", "2023-11-14T22:13:22Z", str(out),
    ])
    assert made.exit_code == 0, made.output
    assert "redacted: 0 faces and 1 privacy zones blurred" in made.output
    redaction = json.loads((out / MANIFEST).read_text())["redaction"]
    assert (redaction["applied"], redaction["zones"]) == (True, 1)
    assert verify_bundle(out).ok


def test_an_export_carries_the_anchor_and_is_refused_over_a_cut_back_log(
    recorder: Recorder, tmp_path: Path
) -> None:
    for n in range(10):
        recorder.audit.record("alice", Action.PLAYBACK, "cam01", detail={"n": n})
    first = recorder.export(tmp_path / "first")
    anchor = first.manifest["audit_anchor"]
    assert anchor["seq"] == 10  # the log as signed just before the export, outside the db
    assert verify_bundle(first.folder, recorder.keys.public_pem).verified

    # Someone with the database file cuts the log back, checkpoints and all.
    with closing(sqlite3.connect(recorder.store.path)) as db:
        db.executescript("DROP TRIGGER audit_log_no_delete;"
                         "DROP TRIGGER audit_checkpoints_no_delete;"
                         "DELETE FROM audit_log WHERE seq > 5; DELETE FROM audit_checkpoints;")
    with pytest.raises(ExportError, match="refuses to sign the audit log at entry 5"):
        recorder.export(tmp_path / "second")
    assert not (tmp_path / "second").exists()
    refused = [e for e in recorder.audit_entries() if e.action == "audit.sign"]
    assert [e.outcome for e in refused] == ["refused"]
