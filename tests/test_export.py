"""Ranges and export on real segments: the exported file must play and last as long as asked."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import insert, update

from conftest import require
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Role
from custodes.config import parse_config
from custodes.media import probe
from custodes.privacy.exports import prune
from custodes.privacy.policy import Profile
from custodes.record.export_jobs import INTERRUPTED, ExportRecord, JobState, new_export_id
from custodes.record.layout import Layout
from custodes.record.manifest import verify_bundle
from custodes.record.playback import (
    ExportError,
    Span,
    coverage,
    export_range,
    segments_in_range,
)
from custodes.store import schema
from custodes.store.db import Store
from footage import SEGMENT_SECONDS, add_segments, encode_clips, open_node
from test_auth import add_user, audit_entries, make_app, node_config, signed_in, wait_done
from test_auth import open_node as open_api_node

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
GOP = 1.0  # seconds between keyframes in the clips


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return encode_clips(tmp_path_factory.mktemp("clips"), count=4)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Store, Layout]]:
    with open_node(tmp_path / "var") as opened:
        yield opened


@pytest.fixture
def recorded(node: tuple[Store, Layout], clips: list[Path]) -> tuple[Store, Layout]:
    """cam01: four contiguous segments from T0 to T0 + 8 s."""
    store, layout = node
    add_segments(store, layout, "cam01", [T0 + n * SEGMENT_SECONDS for n in range(4)], clips)
    return node


def decoded_frames(path: Path) -> int:
    """Decode every frame; PyAV raises on anything a player would choke on."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_export_across_segment_boundaries_plays(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    out = tmp_path / "export.mp4"

    result = export_range(store, layout, "cam01", T0 + 1.5, T0 + 6.5, out)

    assert result.path == out
    assert [s.start for s in result.segments] == [T0 + n * 2 for n in range(4)]
    assert result.gaps == []
    # Stream copy starts at the keyframe at or before the start: up to one GOP more.
    assert 5.0 - 0.1 <= result.duration <= 5.0 + GOP + 0.1
    assert probe(out).duration == result.duration
    assert decoded_frames(out) == pytest.approx(result.duration * 15, abs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.mp4", "var"]  # no leftovers


def test_export_within_one_segment(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    out = tmp_path / "short.mp4"

    result = export_range(store, layout, "cam01", T0 + 2.0, T0 + 3.0, out)

    assert len(result.segments) == 1
    assert 1.0 - 0.1 <= result.duration <= 1.0 + GOP + 0.1
    assert decoded_frames(out) > 0


def test_export_of_a_range_without_footage_fails(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    with pytest.raises(ExportError, match=r"no recordings of cam01 between 2023-11-14 22:00:00Z"):
        export_range(store, layout, "cam01", T0 - 800, T0 - 100, tmp_path / "a.mp4")
    with pytest.raises(ExportError, match="no recordings of cam09"):
        export_range(store, layout, "cam09", T0, T0 + 4, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


def test_export_refuses_an_inverted_range(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    with pytest.raises(ExportError, match="must end after it starts"):
        export_range(store, layout, "cam01", T0 + 4, T0 + 4, tmp_path / "a.mp4")


def test_export_never_overwrites(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"someone else's file")
    with pytest.raises(ExportError, match="exists already"):
        export_range(store, layout, "cam01", T0, T0 + 4, out)
    assert out.read_bytes() == b"someone else's file"


def test_gaps_are_refused_unless_allowed(
    node: tuple[Store, Layout], clips: list[Path], tmp_path: Path
) -> None:
    store, layout = node
    # Footage at T0..T0+4 and T0+10..T0+14: a 6 s hole, and the range runs 2 s past the end.
    add_segments(store, layout, "cam01", [T0, T0 + 2, T0 + 10, T0 + 12], clips)
    out = tmp_path / "gappy.mp4"

    with pytest.raises(ExportError) as caught:
        export_range(store, layout, "cam01", T0 + 1, T0 + 16, out)
    assert str(caught.value) == (
        "the recordings of cam01 between 2023-11-14 22:13:21Z and 2023-11-14 22:13:36Z have "
        "gaps: 2023-11-14 22:13:24Z to 2023-11-14 22:13:30Z (6.0 s); "
        "2023-11-14 22:13:34Z to 2023-11-14 22:13:36Z (2.0 s)"
    )
    assert not out.exists()

    result = export_range(store, layout, "cam01", T0 + 1, T0 + 16, out, allow_gaps=True)

    assert result.gaps == [Span(T0 + 4, T0 + 10), Span(T0 + 14, T0 + 16)]
    # The holes are left out: 3 s before, 4 s after, plus up to a GOP at the start.
    assert 7.0 - 0.1 <= result.duration <= 7.0 + GOP + 0.1
    assert decoded_frames(out) > 0


def test_a_broken_segment_fails_with_ffmpegs_reason(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    with store.read() as conn:
        second = segments_in_range(conn, "cam01", T0 + 2, T0 + 3)[0]
    (layout.recordings / second.path).write_bytes(b"\x00" * 1000)
    out = tmp_path / "broken.mp4"

    with pytest.raises(ExportError, match=r"ffmpeg failed \(exit status \d+\):\n.+"):
        export_range(store, layout, "cam01", T0, T0 + 8, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]  # nothing left behind


def test_coverage_finds_holes_inside_and_at_the_ends(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    # A 0.5 s hole (within tolerance) between the first two, a 3 s hole before the third.
    add_segments(store, layout, "cam01", [T0, T0 + 2.5, T0 + 7.5], clips)
    with store.read() as conn:
        found = segments_in_range(conn, "cam01", T0 + 1, T0 + 20)
        spans, gaps = coverage(conn, "cam01", T0 - 5, T0 + 20)
        _, strict = coverage(conn, "cam01", T0, T0 + 9.5, tolerance=0.1)

    assert [s.start for s in found] == [T0, T0 + 2.5, T0 + 7.5]
    assert spans == [Span(T0, T0 + 4.5), Span(T0 + 7.5, T0 + 9.5)]
    assert gaps == [Span(T0 - 5, T0), Span(T0 + 4.5, T0 + 7.5), Span(T0 + 9.5, T0 + 20)]
    assert strict == [Span(T0 + 2, T0 + 2.5), Span(T0 + 4.5, T0 + 7.5)]


# -- exports that belong to a case, and how long any export lives (through the API) ----------

NOW = time.time()
INVESTIGATOR = "ivan"


@pytest.fixture
def recorder(tmp_path: Path, clips: list[Path]) -> Iterator[Node]:
    """A node (database only) with cam1 recorded from T0 to T0 + 8 s."""
    for opened in open_api_node(tmp_path):
        add_segments(opened.store, opened.layout, "cam1",
                     [T0 + n * SEGMENT_SECONDS for n in range(4)], clips)
        yield opened


@pytest.fixture
def api(recorder: Node) -> FastAPI:
    return make_app(recorder)


def add_case(node: Node, status: str, *, opened_by: str = INVESTIGATOR,
             members: tuple[str, ...] = (), closed: bool = False) -> int:
    """A case row as custodes.privacy.cases leaves it, covering cam1 around T0."""
    values = {"reference": "R-1", "legal_basis": "court order", "purpose": "test",
              "cameras": json.dumps(["cam1"]), "scope_start": T0 - 60, "scope_end": T0 + 60,
              "opened_by": opened_by, "opened_at": NOW - 3600, "status": status,
              "expires_at": NOW + 3600, "closed_at": NOW if closed else None}

    def write(conn: Any) -> int:
        case_id = int(conn.execute(insert(schema.cases).values(values)
                                   .returning(schema.cases.c.id)).scalar_one())
        for name in members:
            conn.execute(insert(schema.case_members).values(
                case_id=case_id, name=name, added_by=opened_by, added_at=NOW))
        return case_id

    return node.store.write(write)


def fake_export(node: Node, *, redacted: bool, case: int | None, created_at: float = NOW,
                state: str = "done", **extra: Any) -> str:
    """An export folder as the export job leaves it (a one-file bundle will do here)."""
    export_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created_at)) + "-" + \
        secrets.token_hex(4)
    folder = node.layout.root / "exports" / export_id
    (folder / "bundle").mkdir(parents=True)
    (folder / "bundle" / "video.mp4").write_bytes(b"footage")
    (folder / "export.json").write_text(json.dumps({
        "id": export_id, "camera": "cam1", "start": T0, "end": T0 + 4, "redacted": redacted,
        "case": case, "allow_gaps": False, "created_by": INVESTIGATOR, "created_at": created_at,
        "state": state, "error": None, "bytes": 7, "duration": 4.0, "audit_seq": None, **extra,
    }))
    return export_id


def test_an_export_names_only_an_active_case_its_user_works_on(api: FastAPI,
                                                              recorder: Node) -> None:
    """Issue 10, item 20: a redacted export filed under a closed, rejected or someone else's
    case is refused, as an unredacted one is."""
    ivan = signed_in(api, add_user(api, INVESTIGATOR, Role.INVESTIGATOR))
    ask = {"camera": "cam1", "start": T0, "end": T0 + 2}
    for status, closed, reason in (("rejected", False, "not approved and active (rejected)"),
                                   ("approved", True, "not approved and active"),
                                   ("pending", False, "not approved and active")):
        case = add_case(recorder, status, closed=closed)
        r = ivan.post("/api/exports", json={**ask, "case": case})
        assert r.status_code == 403, r.text
        assert reason in r.json()["detail"]
    others = add_case(recorder, "approved", opened_by="someone")
    for redact in (True, False):
        r = ivan.post("/api/exports", json={**ask, "case": others, "redact": redact})
        assert (r.status_code, r.json()["detail"]) == (
            403, f"{INVESTIGATOR} is not a member of case {others}")
    assert ivan.post("/api/exports", json={**ask, "case": 2**62}).status_code == 403
    refused = [e for e in audit_entries(recorder, Action.EXPORT) if e["outcome"] == "refused"]
    assert len(refused) == 6
    assert not (recorder.layout.root / "exports").exists()  # nothing was made

    mine = add_case(recorder, "approved")
    r = ivan.post("/api/exports", json={**ask, "case": mine, "redact": False})
    assert r.status_code == 202, r.text
    assert wait_done(ivan, r.json()["id"])["state"] == "done"


def test_a_downloaded_export_explains_itself_and_verifies_with_plain_openssl(
    api: FastAPI, recorder: Node, tmp_path: Path
) -> None:
    """Issue 11: the zip carries a README an inspector without custodes can follow."""
    require(shutil.which("openssl") is not None, "openssl")
    ivan = signed_in(api, add_user(api, INVESTIGATOR, Role.INVESTIGATOR))
    case = add_case(recorder, "approved")
    r = ivan.post("/api/exports", json={"camera": "cam1", "start": T0, "end": T0 + 2,
                                        "case": case, "redact": False})
    assert r.status_code == 202, r.text
    done = wait_done(ivan, r.json()["id"])
    assert done["state"] == "done", done["error"]
    download = ivan.get(f"/api/exports/{done['id']}/download")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        zf.extractall(tmp_path / "unpacked")
    readme = (tmp_path / "unpacked" / "README.txt").read_text("utf-8")
    bundle = tmp_path / "unpacked" / done["id"]
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    [video] = [f for f in manifest["files"] if f["name"].endswith(".mp4")]
    for fact in ("Camera:      cam1", "From:        2023-11-14T22:13:20.000Z (UTC)",
                 "To:          2023-11-14T22:13:22.000Z (UTC)", "NOT redacted", "Case:        R-1",
                 f"Recorder:    {recorder.config.node.name}", f"{done['id']}/{video['name']}",
                 manifest["public_key_fingerprint"], "another\nchannel"):
        assert fact in readme, fact
    # The signed folder is as it was signed: the README lies beside it, not in it.
    assert verify_bundle(bundle, recorder.keys.public_pem).ok

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, shell=True, cwd=bundle, capture_output=True, text=True,
                              timeout=30, check=False)

    commands = [line.strip() for line in readme.splitlines() if line.startswith("  openssl")]
    verify, checksum, fingerprint = commands
    result = run(verify)
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert run(checksum).stdout.split()[-1] == video["sha256"]
    assert run(fingerprint).stdout.split()[-1] == \
        manifest["public_key_fingerprint"].removeprefix("SHA256:")
    # The same command catches an altered manifest.
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "camera": "cam2"}))
    assert run(verify).returncode != 0


def test_an_unredacted_export_dies_with_its_case(api: FastAPI, recorder: Node) -> None:
    """Issue 10, item 8: only the case's own people download its unredacted export, only
    while the case is active; then the privacy upkeep deletes it."""
    ivan = signed_in(api, add_user(api, INVESTIGATOR, Role.INVESTIGATOR))
    mia = signed_in(api, add_user(api, "mia", Role.INVESTIGATOR))
    nina = signed_in(api, add_user(api, "nina", Role.INVESTIGATOR))  # not on the case
    case = add_case(recorder, "approved", members=("mia",))
    export_id = fake_export(recorder, redacted=False, case=case)
    url = f"/api/exports/{export_id}/download"
    assert ivan.get(url).status_code == 200
    assert mia.get(url).status_code == 200
    r = nina.get(url)
    assert (r.status_code, r.json()["detail"]) == (403, f"nina is not a member of case {case}")

    recorder.store.write(lambda conn: conn.execute(
        update(schema.cases).where(schema.cases.c.id == case)
        .values(status="closed", closed_at=NOW, closed_by=INVESTIGATOR)))
    r = ivan.get(url)
    assert r.status_code == 403
    assert "can no longer be downloaded" in r.json()["detail"]
    [pruned] = prune(recorder.store, recorder.audit, recorder.layout.root / "exports",
                     ceiling_days=30, profile=Profile.POLICE)
    assert (pruned.export_id, pruned.reason) == (
        export_id, f"case {case} is not approved and active (closed)")
    assert not (recorder.layout.root / "exports" / export_id).exists()
    [expired] = audit_entries(recorder, Action.EXPORT_EXPIRE)
    assert (expired["actor"], expired["target"]) == ("system", export_id)
    assert ivan.get(url).status_code == 404


def test_nothing_under_exports_outlives_the_retention_ceiling(recorder: Node) -> None:
    """Issue 10, item 8: every export older than the ceiling goes, redacted or not, and so
    do failed exports, unreadable folders and forgotten download zips; the rest stays."""
    root = recorder.layout.root / "exports"
    live = add_case(recorder, "approved")
    day = 86400.0
    keep = [fake_export(recorder, redacted=True, case=None, created_at=NOW - 29 * day),
            fake_export(recorder, redacted=False, case=live, created_at=NOW - day),
            fake_export(recorder, redacted=True, case=None, state="running")]
    old = fake_export(recorder, redacted=True, case=None, created_at=NOW - 31 * day)
    failed = fake_export(recorder, redacted=True, case=None, state="failed",
                         created_at=NOW - 2 * day)
    access = fake_export(recorder, redacted=False, case=None, created_at=NOW - 20 * day,
                         subject_access={"reference": "SAR-1", "request": 1})
    junk = root / "20200101-000000-00000000"
    junk.mkdir()
    zipped = root / ".download-abc.zip"
    zipped.write_bytes(b"zip")
    for path in (junk, zipped):
        os.utime(path, (NOW - 2 * day, NOW - 2 * day))

    pruned = prune(recorder.store, recorder.audit, root, ceiling_days=30,
                   profile=Profile.SCHOOL, now=NOW)

    assert {p.export_id: p.reason for p in pruned} == {
        old: "older than the retention ceiling",
        failed: "failed more than a day ago",
        access: "subject access export older than 14 days",
        junk.name: "no readable record",
    }
    assert sorted(p.name for p in root.iterdir()) == sorted(keep)
    assert len(audit_entries(recorder, Action.EXPORT_EXPIRE)) == 4


# -- export jobs across a stop and a restart (issue 10) ----------------------------------------

# A node process that queues two exports and is killed while making the first: its transform
# runs once the unredacted source and the bundle's work folder exist, and ends the process.
KILLED_MID_EXPORT = """
import os, sys, threading, time
from custodes.app import Node
from custodes.auth.roles import Actor, Role
from custodes.config import parse_config
from custodes.record.export_jobs import ExportRecord, new_export_id

node = Node(parse_config(open(sys.argv[1]).read()))
node.store.open()

all_queued = threading.Event()

def killed(src, dst):
    all_queued.wait(60)
    os._exit(9)

for _ in range(2):
    node.exports.submit(ExportRecord(
        id=new_export_id(), camera="cam1", start=float(sys.argv[2]),
        end=float(sys.argv[2]) + 4, redacted=True, case=None, allow_gaps=False,
        created_by="ivan", created_at=time.time()), Actor("ivan", Role.INVESTIGATOR), killed)
all_queued.set()
time.sleep(120)
"""


def test_exports_cut_short_by_a_killed_node_fail_at_the_next_start(
        tmp_path: Path, clips: list[Path]) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_config(tmp_path)))
    for first in open_api_node(tmp_path):
        add_segments(first.store, first.layout, "cam1",
                     [T0 + n * SEGMENT_SECONDS for n in range(4)], clips)
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_EXPORT, str(config), str(T0)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == 9, killed.stderr
    root = tmp_path / "var" / "exports"
    records = {p.name: json.loads((p / "export.json").read_text()) for p in root.iterdir()}
    assert sorted(r["state"] for r in records.values()) == ["queued", "running"]
    [running] = [name for name, r in records.items() if r["state"] == "running"]
    assert [p for p in (root / running).iterdir() if p.name.startswith(".")]  # half made

    node = Node(parse_config(config.read_text()))
    # Also stopped between the bundle's completion and its record's update: that one is done.
    finished = fake_export(node, redacted=True, case=None, state="running")
    (root / finished / "bundle" / "manifest.sig").write_bytes(b"signature")
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        node.prepare()  # the next start
    finally:
        os.umask(umask)
    try:
        after = {p.name: json.loads((p / "export.json").read_text()) for p in root.iterdir()}
        assert after[finished]["state"] == "done"
        assert after[finished]["bytes"] == len(b"footage") + len(b"signature")
        for export_id in records:
            assert (after[export_id]["state"], after[export_id]["error"]) == (
                "failed", INTERRUPTED)
            assert sorted(p.name for p in (root / export_id).iterdir()) == ["export.json"]
        failures = [json.loads(e["detail"]) for e in audit_entries(node, Action.EXPORT)
                    if e["outcome"] == "failed" and e["actor"] == "system"]
        assert sorted((f["export"], f["was"]) for f in failures) == sorted(
            (name, r["state"]) for name, r in records.items())
        app = make_app(node)
        ivan = signed_in(app, add_user(app, INVESTIGATOR, Role.INVESTIGATOR))
        listed = {x["id"]: x for x in ivan.get("/api/exports").json()["exports"]}
        assert {k: x["state"] for k, x in listed.items()} == {
            **{k: "failed" for k in records}, finished: "done"}
        assert listed[running]["download_url"] is None
    finally:
        node.store.close()


def test_a_stop_fails_the_queued_exports_and_takes_no_new_one(recorder: Node) -> None:
    release = threading.Event()
    running = threading.Event()

    def held(src: Path, dst: Path) -> dict[str, Any]:
        running.set()
        release.wait(60)
        raise RuntimeError("ffmpeg was stopped by the signal")

    actor = Actor(INVESTIGATOR, Role.INVESTIGATOR)

    def submit() -> ExportRecord:
        return recorder.exports.submit(ExportRecord(
            id=new_export_id(), camera="cam1", start=T0, end=T0 + 2, redacted=True, case=None,
            allow_gaps=False, created_by=INVESTIGATOR, created_at=time.time()), actor, held)

    first, second = submit(), submit()
    assert running.wait(60)
    assert recorder.exports.get(first.id).state is JobState.RUNNING  # type: ignore[union-attr]
    recorder.exports.stop()
    queued = recorder.exports.get(second.id)
    assert queued is not None
    assert (queued.state, queued.error) == (JobState.FAILED, INTERRUPTED)
    with pytest.raises(RuntimeError, match="stopping"):
        submit()
    release.set()
    deadline = time.monotonic() + 60
    while (made := recorder.exports.get(first.id)) is None or not made.state.finished:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (made.state, made.error) == (JobState.FAILED, INTERRUPTED)
    assert not [p for p in (recorder.layout.exports / first.id).iterdir()
                if p.name.startswith(".")]
