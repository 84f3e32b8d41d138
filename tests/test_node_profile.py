"""Issue 10, items 10, 11 and 14: the profile is pinned in the database, a switch to school
keeps no biometric data or case powers, and nothing the node stores is readable by others.

Each test performs the attack (a second config or an environment variable switching the
profile, a municipal node moved to school, a data folder under umask 022) on a node prepared
as `custodes run` prepares it, without cameras.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert, select
from typer.testing import CliRunner

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Role
from custodes.auth.users import Users
from custodes.cli import app as cli
from custodes.config import load_config
from custodes.media import ffmpeg_exe
from custodes.privacy.cases import Cases
from custodes.privacy.pinning import ProfileMismatch, pinned_profile
from custodes.privacy.policy import Profile, Refused
from custodes.store import schema

DAY = 86400.0
BOB = Actor("bob", Role.APPROVER)


def write_config(tmp_path: Path, profile: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "profile": profile,
        "sites": {"s": {"name": "Site"}},
        "cameras": {"cam1": {"site": "s", "location": "corridor", "purpose": "Test camera",
                             "main_url": "rtsp://127.0.0.1:1/cam1"}},
        "storage": {"path": str(tmp_path / "var")},
    }))
    return path


def prepared(config: Path, env: dict[str, str] | None = None) -> Node:
    node = Node(load_config(config, env=env))
    node.prepare()
    return node


def audit(node: Node, *actions: Action) -> list[tuple[str, str, str, dict[str, Any]]]:
    log = schema.audit_log
    with node.store.read() as conn:
        rows = conn.execute(select(log).where(log.c.action.in_([a.value for a in actions]))
                            .order_by(log.c.seq))
        return [(r.actor, r.action, r.outcome, json.loads(r.detail)) for r in rows]


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    # Node.prepare sets the process umask, as `custodes run` does; the tests share a process.
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


# -- item 10: the profile is pinned at the first start --------------------------------------------


def test_neither_an_environment_variable_nor_a_second_config_switches_the_profile(
        tmp_path: Path) -> None:
    config = tmp_path / "env.yaml"
    config.write_text(write_config(tmp_path, "school").read_text()
                      .replace("profile: school", "profile: ${P}"))
    node = prepared(config, env={"P": "school"})
    assert pinned_profile(node.store) is Profile.SCHOOL
    Users(node.store).add("ines", Role.INVESTIGATOR, "ines-password-1")
    node.store.close()

    # The attack: the same config with P=police, or a second config, on the same storage.
    with pytest.raises(ProfileMismatch, match="pinned to the school profile, the config says "
                                              "police"):
        prepared(config, env={"P": "police"})
    with pytest.raises(ProfileMismatch, match="pinned to the school profile"):
        prepared(write_config(tmp_path, "municipal", "second.yaml"))
    # Neither can a command that acts for a user enroll into the school database.
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"not needed: refused before the photo is read")
    r = CliRunner().invoke(cli, [
        "gallery", "enroll", "--config", str(tmp_path / "second.yaml"), "--user", "ines",
        "subject A", "--photo", str(photo), "--consent", "form 1",
        "--expires", "2099-01-01T00:00:00Z"], env={"CUSTODES_PASSWORD": "ines-password-1"})
    assert r.exit_code == 2, r.output
    assert "pinned to the school profile" in r.output
    # The refused starts left no node.start, only their refusals.
    node = prepared(config, env={"P": "school"})
    try:
        entries = audit(node, Action.PROFILE_PIN, Action.PROFILE_CHANGE, Action.NODE_START)
        with node.store.read() as conn:
            enrolled = conn.execute(select(schema.gallery_people)).all()
    finally:
        node.store.close()
    assert [(a, o) for _, a, o, _ in entries] == [
        ("profile.pin", "ok"), ("node.start", "ok"), ("profile.pin", "refused"),
        ("profile.pin", "refused"), ("node.start", "ok")]
    assert entries[2][3]["pinned"] == "school"
    assert entries[2][3]["configured"] == "police"
    assert enrolled == []


def test_only_the_explicit_command_changes_the_profile_and_it_is_audited(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, "police")
    prepared(config).store.close()
    runner = CliRunner()
    r = runner.invoke(cli, ["profile", "set", "--config", str(config), "municipal",
                            "--reason", "", "--yes"])
    assert r.exit_code == 2
    r = runner.invoke(cli, ["profile", "set", "--config", str(config), "municipal",
                            "--reason", "council decision 2026/4", "--yes"])
    assert r.exit_code == 0, r.output
    assert "will not start until it says municipal" in r.output
    with pytest.raises(ProfileMismatch):
        prepared(config)
    node = prepared(write_config(tmp_path, "municipal"))
    try:
        [(actor, _, outcome, detail)] = audit(node, Action.PROFILE_CHANGE)
    finally:
        node.store.close()
    assert actor.startswith("cli:")
    assert (outcome, detail) == ("ok", {"from": "police", "to": "municipal",
                                        "reason": "council decision 2026/4"})
    r = runner.invoke(cli, ["profile", "show", "--config", str(config)])
    assert "pinned: municipal; config: municipal" in r.output


# -- item 11: a node switched to school keeps no biometric data and no case powers ---------------


def plant_biometrics(node: Node) -> dict[str, int]:
    """What a municipal node leaves behind: a face descriptor, a gallery entry, a pending and
    an approved case with subjects, the approved one holding footage. Written directly (the
    blobs need not be real descriptors: the wipe must not care)."""
    now = time.time()

    def write(conn: Any) -> dict[str, int]:
        conn.execute(insert(schema.faces).values(
            camera="cam1", start=now - 60, end=now - 50, detections=3, box="[0,0,9,9]",
            quality=0.9, embedding=None, sealed=b"sealed descriptor"))
        person = conn.execute(insert(schema.gallery_people).values(
            reference="subject A", basis_kind="consent", basis_reference="form 1",
            expires_at=now + DAY, created_at=now, created_by="ines", updated_at=now,
            updated_by="ines", approved_by="dora", approved_at=now,
        ).returning(schema.gallery_people.c.id)).scalar_one()
        conn.execute(insert(schema.gallery_photos).values(
            person_id=person, descriptor=b"sealed", crop=b"sealed crop"))
        ids = {}
        for status in ("pending", "approved"):
            case = conn.execute(insert(schema.cases).values(
                reference=f"order {status}", legal_basis="court order", purpose="test",
                cameras='["cam1"]', scope_start=now - DAY, scope_end=now, watchlist=0,
                opened_by="ines", opened_at=now, status=status,
                decided_by="dora" if status == "approved" else None,
                decided_at=now if status == "approved" else None, expires_at=now + 30 * DAY,
            ).returning(schema.cases.c.id)).scalar_one()
            ids[status] = int(case)
            conn.execute(insert(schema.case_subjects).values(
                case_id=case, label="subject", added_by="ines", added_at=now,
                descriptor=b"sealed descriptor", crop=b"sealed crop"))
        hold = conn.execute(insert(schema.holds).values(
            camera="cam1", start=now - DAY, end=now, reason="case", created_at=now,
            created_by="dora", expires_at=now + 30 * DAY).returning(schema.holds.c.id)
        ).scalar_one()
        conn.execute(insert(schema.case_holds).values(case_id=ids["approved"], hold_id=hold))
        return ids

    return node.store.write(write)


def biometrics_left(node: Node) -> dict[str, Any]:
    with node.store.read() as conn:
        return {
            "faces": conn.execute(select(schema.faces.c.id).where(
                schema.faces.c.sealed.is_not(None))).all(),
            "gallery": conn.execute(select(schema.gallery_photos)).all(),
            "subjects": conn.execute(select(schema.case_subjects.c.id).where(
                schema.case_subjects.c.descriptor.is_not(None)
                | schema.case_subjects.c.crop.is_not(None))).all(),
            "open cases": conn.execute(select(schema.cases.c.id).where(
                schema.cases.c.status.in_(["pending", "approved"]))).all(),
            "holds": conn.execute(select(schema.holds.c.id).where(
                schema.holds.c.released_at.is_(None))).all(),
        }


def test_a_municipal_node_moved_to_school_keeps_no_biometric_data(tmp_path: Path) -> None:
    config = write_config(tmp_path, "municipal")
    node = prepared(config)
    cases = plant_biometrics(node)
    # Under a school profile no case is decided and no subject crop is opened, whatever the
    # database still holds.
    school = Cases(node.store, node.keys, node.audit, Profile.SCHOOL)
    with pytest.raises(Refused, match="school profile does not allow face search"):
        school.approve(BOB, cases["pending"])
    with pytest.raises(Refused, match="school profile does not allow face search"):
        school.subject_crop(BOB, cases["approved"], 1)
    node.store.close()

    r = CliRunner().invoke(cli, ["profile", "set", "--config", str(config), "school",
                                 "--reason", "the building became a school", "--yes"])
    assert r.exit_code == 0, r.output
    assert "deleted: face descriptors 1, gallery people 1, cases ended 2, case subjects 2" \
        in r.output
    node = prepared(write_config(tmp_path, "school"))
    try:
        assert biometrics_left(node) == {"faces": [], "gallery": [], "subjects": [],
                                         "open cases": [], "holds": []}
        [(actor, _, _, record)] = audit(node, Action.BIOMETRIC_WIPE)
    finally:
        node.store.close()
    assert actor.startswith("cli:")
    assert record == {"profile": "school", "face_descriptors": 1, "gallery_people": 1,
                      "cases_ended": 2, "case_subjects": 2,
                      "reason": "profile changed to school"}


def test_a_school_start_wipes_biometric_data_it_finds(tmp_path: Path) -> None:
    # A school database that holds biometric data anyway (an older version, a restored copy,
    # a hand-edited pin): the start deletes it, with a deletion record.
    node = prepared(write_config(tmp_path, "school"))
    plant_biometrics(node)
    node.store.close()
    node = prepared(write_config(tmp_path, "school"))
    try:
        assert not any(biometrics_left(node).values())
        [(actor, _, _, record)] = audit(node, Action.BIOMETRIC_WIPE)
    finally:
        node.store.close()
    assert (actor, record["reason"], record["gallery_people"]) == (
        "system", "not allowed by the profile at start", 1)


# -- item 14: nothing the node keeps is readable by other accounts -------------------------------


def test_data_files_are_not_world_readable(tmp_path: Path) -> None:
    os.umask(0o022)  # the usual default, under which the old node left everything 0644
    config = write_config(tmp_path, "municipal")
    var = tmp_path / "var"
    old = [var / "recordings/cam1/2026-11-01/10/00.00.mp4", var / "exports/e1/video.mp4",
           var / "snapshots/cam1/2026-11-01/1.jpg"]
    for path in old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"footage")
    assert stat.S_IMODE(old[0].stat().st_mode) == 0o644
    node = prepared(config)
    try:
        # Existing files are fixed at start; the database is for the node's account alone.
        assert stat.S_IMODE(node.layout.database.stat().st_mode) == 0o600
        for folder, dirs, files in os.walk(var):
            for name in (*dirs, *files):
                mode = stat.S_IMODE((Path(folder) / name).lstat().st_mode)
                assert mode & 0o027 == 0, f"{folder}/{name} is {mode:o}"
        assert stat.S_IMODE(var.stat().st_mode) == 0o750
        # New files: the node's own, and those of the processes it starts (ffmpeg).
        new = var / "recordings/cam1/new.mp4"
        new.write_bytes(b"footage")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
        segment = var / "cache/cam1/segment.mp4"
        segment.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc=size=64x48:rate=5", "-t", "0.4", str(segment)], check=True)
        assert stat.S_IMODE(segment.stat().st_mode) == 0o640
        assert stat.S_IMODE(segment.parent.stat().st_mode) == 0o750
    finally:
        node.store.close()
