"""The video, events and exports routes and the pages, in-process on real footage.

The node opens only its database (no camera runs): segments are real H.264 MP4 files indexed
in the real store, live pictures are real JPEG files where the analysis worker leaves them.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from custodes.api.app import create_app
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.record.manifest import verify_bundle
from custodes.record.playback import Segment
from custodes.redaction.copies import RedactedCopies
from custodes.redaction.live import picture_path, watch_path
from custodes.store import schema
from footage import SEGMENT_SECONDS, add_segments, encode_clips
from test_auth import add_user, audit_entries, client, open_node, signed_in, wait_done

T0 = 1_714_557_600.0  # 2024-05-01 10:00:00 UTC
DAY = "2024-05-01"
# cam1: four segments, a 6 s hole, two more; cam2: one segment.
CAM1_STARTS = [T0 + n * SEGMENT_SECONDS for n in range(4)] + [T0 + 14, T0 + 16]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return encode_clips(tmp_path_factory.mktemp("clips"), count=3)


@pytest.fixture
def node(tmp_path: Path, clips: list[Path]) -> Iterator[Node]:
    for node in open_node(tmp_path):
        add_segments(node.store, node.layout, "cam1", CAM1_STARTS, clips)
        add_segments(node.store, node.layout, "cam2", [T0], clips)
        yield node


@pytest.fixture
def app(node: Node) -> FastAPI:
    return create_app(node)


def as_role(app: FastAPI, role: Role, cameras: list[str] | None = None) -> Any:
    name = role.value if cameras is None else role.value + "-scoped"
    return signed_in(app, add_user(app, name, role, cameras))


def add_event(node: Node, camera: str, kind: str, start: float, *,
              snapshot: str | None = None, data: dict[str, Any] | None = None) -> int:
    values = {"camera": camera, "kind": kind, "start": start, "end": start + 1,
              "data": json.dumps(data or {}), "snapshot": snapshot}
    return int(node.store.write(lambda conn: conn.execute(
        insert(schema.events).values(values).returning(schema.events.c.id)).scalar_one()))


def jpeg(value: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))
    assert ok
    return data.tobytes()


# -- cameras and live --------------------------------------------------------------------------


def test_cameras_lists_only_those_the_user_may_see(app: FastAPI) -> None:
    everything = as_role(app, Role.VIEWER).get("/api/cameras").json()["cameras"]
    assert [c["name"] for c in everything] == ["cam1", "cam2"]
    assert set(everything[0]) >= {"name", "site", "location", "state", "recording",
                                  "analysed_fps"}
    scoped = as_role(app, Role.VIEWER, ["cam2"])
    assert [c["name"] for c in scoped.get("/api/cameras").json()["cameras"]] == ["cam2"]
    assert scoped.get("/api/cameras/cam1/live.jpg").status_code == 403
    assert scoped.get("/api/cameras/nope/live.jpg").status_code == 404


def test_live_picture_is_the_newest_redacted_jpeg_and_watching_is_audited_once(
    app: FastAPI, node: Node
) -> None:
    viewer = as_role(app, Role.VIEWER)
    waiting = viewer.get("/api/cameras/cam1/live.jpg")
    assert waiting.status_code == 503
    assert "no live picture" in waiting.json()["detail"]
    # Asking is what makes the worker write pictures: the watch file was touched.
    assert time.time() - watch_path(node.layout.live, "cam1").stat().st_mtime < 5

    target = picture_path(node.layout.live, "cam1")
    target.write_bytes(jpeg(90))
    captured = time.time() - 0.25
    os.utime(target, (captured, captured))
    got = viewer.get("/api/cameras/cam1/live.jpg")
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/jpeg"
    assert got.content == target.read_bytes()
    assert got.headers["cache-control"] == "no-store"
    assert abs(float(got.headers["x-capture-time"]) - captured) < 0.01
    assert 0.25 <= float(got.headers["x-frame-age"]) < 5
    assert viewer.get("/api/cameras/cam1/live.jpg").status_code == 200

    watched = [e for e in audit_entries(node, Action.LIVE_VIEW) if e["outcome"] == "ok"]
    assert [(e["actor"], e["target"]) for e in watched] == [("viewer", "cam1")]

    # Asked for a newer picture than the one it has, the client gets it as soon as it is
    # written, not before.
    def write_newer() -> None:
        time.sleep(0.3)
        tmp = target.with_name(".newer")
        tmp.write_bytes(jpeg(200))
        os.replace(tmp, target)

    writer = threading.Thread(target=write_newer)
    asked = time.monotonic()
    writer.start()
    newer = viewer.get("/api/cameras/cam1/live.jpg", params={"after": captured})
    writer.join()
    assert newer.status_code == 200
    assert time.monotonic() - asked >= 0.3
    assert float(newer.headers["x-capture-time"]) > captured
    assert newer.content == target.read_bytes()

    old = time.time() - 60
    os.utime(target, (old, old))
    stale = viewer.get("/api/cameras/cam1/live.jpg")
    assert stale.status_code == 503


def test_roles_without_live_view_get_403(app: FastAPI) -> None:
    inspector = as_role(app, Role.INSPECTOR)
    assert inspector.get("/api/cameras/cam1/live.jpg").status_code == 403
    assert inspector.get("/api/cameras/cam1/playback", params={"at": T0}).status_code == 403
    assert client(app).get("/api/cameras/cam1/live.jpg").status_code == 401


# -- timeline ----------------------------------------------------------------------------------


def test_timeline_merges_segments_and_shows_gaps_motion_and_faces(
    app: FastAPI, node: Node
) -> None:
    node.store.write(lambda conn: conn.execute(insert(schema.motion).values(
        camera="cam1", start=T0 + 1, end=T0 + 3, peak=0.2)))
    add_event(node, "cam1", "face", T0 + 2.5)
    add_event(node, "cam1", "motion", T0 + 1)
    add_event(node, "cam2", "face", T0 + 1)
    r = as_role(app, Role.VIEWER).get("/api/cameras/cam1/timeline", params={"day": DAY})
    assert r.status_code == 200
    tl = r.json()
    day_start = T0 - 10 * 3600
    assert (tl["start"], tl["end"]) == (day_start, day_start + 86400)
    assert tl["coverage"] == [{"start": T0, "end": T0 + 8}, {"start": T0 + 14, "end": T0 + 18}]
    # cam1 was installed at T0 (its first recording): the hours before are no gap.
    assert tl["installed"] == T0
    assert tl["gaps"] == [{"start": T0 + 8, "end": T0 + 14},
                          {"start": T0 + 18, "end": day_start + 86400}]
    assert tl["motion"] == [{"start": T0 + 1, "end": T0 + 3, "peak": 0.2}]
    assert tl["faces"] == [{"start": T0 + 2.5, "end": T0 + 3.5}]

    ranged = as_role(app, Role.OPERATOR).get(
        "/api/cameras/cam1/timeline", params={"start": T0 + 3, "end": T0 + 15}).json()
    assert ranged["coverage"] == [{"start": T0 + 3, "end": T0 + 8},
                                  {"start": T0 + 14, "end": T0 + 15}]


def test_timeline_shows_motion_still_going_up_to_now(app: FastAPI, node: Node) -> None:
    started = time.time() - 20
    node.store.write(lambda conn: conn.execute(insert(schema.events).values(
        camera="cam1", kind="motion", start=started, end=None, data="{}")))
    tl = as_role(app, Role.VIEWER).get("/api/cameras/cam1/timeline", params={
        "start": started - 60, "end": started + 600}).json()
    [moving] = tl["motion"]
    assert moving["start"] == started
    assert started + 19 < moving["end"] <= tl["now"]
    assert tl["gaps"][-1]["end"] == tl["now"]  # the future is no gap


def test_timeline_refuses_unclear_ranges(app: FastAPI) -> None:
    viewer = as_role(app, Role.VIEWER)
    url = "/api/cameras/cam1/timeline"
    assert viewer.get(url).status_code == 400
    assert viewer.get(url, params={"day": DAY, "start": T0}).status_code == 400
    assert viewer.get(url, params={"start": T0, "end": T0 - 1}).status_code == 400
    assert viewer.get(url, params={"start": T0, "end": T0 + 30 * 86400}).status_code == 400
    assert viewer.get(url, params={"day": "yesterday"}).status_code == 422
    assert viewer.get("/api/cameras/..%2F..%2Fetc/timeline", params={"day": DAY}
                      ).status_code in (404, 422)


# -- playback ----------------------------------------------------------------------------------


def test_playback_gives_originals_from_the_moment_asked_and_serves_byte_ranges(
    app: FastAPI, node: Node
) -> None:
    operator = as_role(app, Role.OPERATOR)
    r = operator.get("/api/cameras/cam1/playback", params={"at": T0 + 3.5})
    assert r.status_code == 200
    p = r.json()
    assert p["redacted"] is False
    assert p["more"] is False
    assert p["offset"] == pytest.approx(1.5)
    assert p["start"] == pytest.approx(T0 + 3.5)
    starts = [s["start"] for s in p["segments"]]
    assert starts == [T0 + 2, T0 + 4, T0 + 6, T0 + 14, T0 + 16]
    first = p["segments"][0]
    assert first["url"] == f"/api/segments/{first['id']}/video"

    whole = operator.get(first["url"])
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    part = operator.get(first["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    [entry] = audit_entries(node, Action.PLAYBACK)
    assert (entry["actor"], entry["target"]) == ("operator", "cam1")
    detail = json.loads(entry["detail"])
    assert detail["start"] == pytest.approx(T0 + 3.5)
    assert detail["end"] == T0 + 18
    assert detail["redacted"] is False

    # In a gap: from the next recording on; after the last: nothing.
    gap = operator.get("/api/cameras/cam1/playback", params={"at": T0 + 10}).json()
    assert gap["start"] == T0 + 14
    assert gap["offset"] == 0
    none = operator.get("/api/cameras/cam1/playback", params={"at": T0 + 100})
    assert none.status_code == 404
    assert "no recordings" in none.json()["detail"]


def test_a_viewer_gets_redacted_copies_and_never_the_original(app: FastAPI, node: Node) -> None:
    viewer = as_role(app, Role.VIEWER)
    p = viewer.get("/api/cameras/cam2/playback", params={"at": T0}).json()
    assert p["redacted"] is True
    [seg] = p["segments"]
    assert seg["url"] == f"/api/segments/{seg['id']}/redacted"
    refused = viewer.get(f"/api/segments/{seg['id']}/video")
    assert refused.status_code == 403
    assert "playback.unredacted" in refused.json()["detail"]
    assert any(e["outcome"] == "refused" for e in audit_entries(node, Action.ACCESS))

    copy = viewer.get(seg["url"])
    assert copy.status_code == 200
    assert copy.headers["content-type"] == "video/mp4"
    original = node.layout.recordings / next((node.layout.recordings / "cam2").rglob("*.mp4")
                                             ).relative_to(node.layout.recordings)
    assert copy.content != original.read_bytes()
    [made] = (node.layout.root / "redacted" / "cam2").glob("*.mp4")
    assert made.read_bytes() == copy.content
    assert viewer.get(seg["url"], headers={"Range": "bytes=0-9"}).status_code == 206
    # An operator may ask for the redacted copy too; it is the same file, not the original.
    operator = as_role(app, Role.OPERATOR)
    again = operator.get("/api/cameras/cam2/playback", params={"at": T0, "redacted": True})
    assert again.json()["segments"][0]["url"] == seg["url"]
    assert operator.get(seg["url"]).content == made.read_bytes()


def test_redacted_copies_go_with_their_segments(app: FastAPI, node: Node) -> None:
    viewer = as_role(app, Role.VIEWER)
    with node.store.read() as conn:
        row = conn.execute(schema.segments.select().where(schema.segments.c.camera == "cam2")
                           ).one()
    seg = {"id": row.id, "url": f"/api/segments/{row.id}/redacted"}
    copies = RedactedCopies()
    # Stands for a copy made earlier (making one costs seconds; the test above does that).
    made = copies.path(node, Segment.from_row(row))
    made.parent.mkdir(parents=True)
    made.write_bytes(b"redacted")
    assert copies.prune(node) == 0
    node.store.write(lambda conn: conn.execute(
        schema.segments.delete().where(schema.segments.c.id == seg["id"])))
    assert copies.prune(node) == 1
    assert not list((node.layout.root / "redacted").rglob("*.mp4"))
    assert viewer.get(seg["url"]).status_code == 404


def test_stored_paths_cannot_lead_outside_the_storage_folders(app: FastAPI, node: Node) -> None:
    node.store.write(lambda conn: conn.execute(insert(schema.segments).values(
        camera="cam1", start=T0 + 500, end=T0 + 502, duration=2, bytes=1,
        path="../custodes.db")))
    operator = as_role(app, Role.OPERATOR)
    p = operator.get("/api/cameras/cam1/playback", params={"at": T0 + 500}).json()
    assert operator.get(p["segments"][0]["url"]).status_code == 404
    event = add_event(node, "cam1", "face", T0, snapshot="../../custodes.db")
    assert operator.get(f"/api/events/{event}/snapshot.jpg").status_code == 404
    assert operator.get("/api/segments/..%2F1/video").status_code == 404
    assert operator.get("/api/exports/..%2F..%2Fcustodes.db/download").status_code in (404, 422)


# -- events ------------------------------------------------------------------------------------


def test_events_filter_page_and_show_their_snapshots(app: FastAPI, node: Node) -> None:
    snap = node.layout.snapshots / "cam1" / DAY / "face-1.jpg"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(jpeg(30))
    face = add_event(node, "cam1", "face", T0 + 5, snapshot="cam1/2024-05-01/face-1.jpg",
                     data={"detections": 4, "quality": 0.8})
    motions = [add_event(node, "cam1", "motion", T0 + n, data={"peak": 0.1}) for n in range(4)]
    other = add_event(node, "cam2", "motion", T0 + 2)

    viewer = as_role(app, Role.VIEWER)
    everything = viewer.get("/api/events").json()
    # Newest first; at the same start time the later one recorded first.
    assert [e["id"] for e in everything["events"]] == [face, motions[3], other, motions[2],
                                                       motions[1], motions[0]]
    assert everything["next"] is None
    first = everything["events"][0]
    assert first["data"] == {"detections": 4, "quality": 0.8}
    assert first["snapshot_url"] == f"/api/events/{face}/snapshot.jpg"
    shot = viewer.get(first["snapshot_url"])
    assert shot.status_code == 200
    assert shot.content == snap.read_bytes()
    assert shot.headers["content-type"] == "image/jpeg"
    assert viewer.get(f"/api/events/{motions[0]}/snapshot.jpg").status_code == 404

    page1 = viewer.get("/api/events", params={"camera": "cam1", "kind": "motion",
                                              "limit": 2}).json()
    assert [e["id"] for e in page1["events"]] == [motions[3], motions[2]]
    page2 = viewer.get("/api/events", params={"camera": "cam1", "kind": "motion", "limit": 2,
                                              "before": page1["next"]}).json()
    assert [e["id"] for e in page2["events"]] == [motions[1], motions[0]]
    ranged = viewer.get("/api/events", params={"start": T0 + 1, "end": T0 + 3}).json()
    assert {e["id"] for e in ranged["events"]} == {motions[1], motions[2], other}

    scoped = as_role(app, Role.VIEWER, ["cam2"])
    assert [e["id"] for e in scoped.get("/api/events").json()["events"]] == [other]
    assert scoped.get(first["snapshot_url"]).status_code == 403
    assert scoped.get("/api/events", params={"camera": "cam1"}).status_code == 403
    assert as_role(app, Role.INSPECTOR).get("/api/events").status_code == 403


# -- exports -----------------------------------------------------------------------------------


def test_a_redacted_export_is_made_downloaded_and_verifies(
    app: FastAPI, node: Node, tmp_path: Path
) -> None:
    operator = as_role(app, Role.OPERATOR)
    r = operator.post("/api/exports", json={"camera": "cam1", "start": T0 + 1, "end": T0 + 3})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["redacted"] is True
    assert started["state"] in ("queued", "running", "done")
    done = wait_done(operator, started["id"])
    assert done["state"] == "done", done["error"]
    assert done["bytes"] > 0
    assert done["duration"] > 0

    verified = operator.get(done["verify_url"]).json()
    assert verified["ok"] is True
    assert verified["signature_ok"] is True

    download = operator.get(done["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        zf.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / done["id"]
    report = verify_bundle(bundle, node.keys.public_pem)
    assert report.ok, report.problems
    assert report.manifest is not None
    assert report.manifest["redaction"]["applied"] is True
    [entry] = audit_entries(node, Action.EXPORT_DOWNLOAD)
    assert json.loads(entry["detail"])["export"] == done["id"]
    assert not list((node.layout.root / "exports").glob(".download-*"))  # temp zip removed
    assert as_role(app, Role.VIEWER).get("/api/exports").status_code == 403


def test_unredacted_exports_need_the_permission_and_an_approved_case(
    app: FastAPI, node: Node
) -> None:
    ask = {"camera": "cam1", "start": T0, "end": T0 + 4, "redact": False}
    operator = as_role(app, Role.OPERATOR)
    refused = operator.post("/api/exports", json=ask)
    assert refused.status_code == 403
    assert "redacted" in refused.json()["detail"]
    investigator = as_role(app, Role.INVESTIGATOR)
    assert "needs a case" in investigator.post("/api/exports", json=ask).json()["detail"]

    def add_case(status: str, cameras: list[str]) -> int:
        values = {"reference": "R-1", "legal_basis": "court order", "purpose": "test",
                  "cameras": json.dumps(cameras), "scope_start": T0 - 60,
                  "scope_end": T0 + 60, "opened_by": "investigator", "opened_at": T0,
                  "status": status, "expires_at": time.time() + 3600}
        return int(node.store.write(lambda conn: conn.execute(
            insert(schema.cases).values(values).returning(schema.cases.c.id)).scalar_one()))

    pending = add_case("pending", ["cam1"])
    assert "not approved" in investigator.post(
        "/api/exports", json={**ask, "case": pending}).json()["detail"]
    elsewhere = add_case("approved", ["cam2"])
    assert "does not cover" in investigator.post(
        "/api/exports", json={**ask, "case": elsewhere}).json()["detail"]
    refusals = [e for e in audit_entries(node, Action.EXPORT) if e["outcome"] == "refused"]
    assert len(refusals) == 4

    approved = add_case("approved", ["cam1"])
    r = investigator.post("/api/exports", json={**ask, "case": approved})
    assert r.status_code == 202, r.text
    done = wait_done(investigator, r.json()["id"])
    assert done["state"] == "done"
    assert done["redacted"] is False
    assert done["case"] == approved
    # Someone who may export only redacted video cannot fetch it.
    assert operator.get(done["download_url"]).status_code == 403


def test_exports_refuse_ranges_without_footage(app: FastAPI) -> None:
    operator = as_role(app, Role.OPERATOR)
    body = {"camera": "cam1", "start": T0 + 6, "end": T0 + 16}
    gaps = operator.post("/api/exports", json=body)
    assert gaps.status_code == 409
    assert "gaps" in gaps.json()["detail"]
    empty = operator.post("/api/exports", json={**body, "start": T0 + 100, "end": T0 + 200})
    assert empty.status_code == 404
    assert operator.post("/api/exports", json={**body, "end": T0}).status_code == 400
    assert operator.post("/api/exports", json={**body, "path": "/etc"}).status_code == 422


# -- pages -------------------------------------------------------------------------------------


def test_pages_ask_for_sign_in_and_show_only_what_the_role_may_use(app: FastAPI) -> None:
    anonymous = client(app)
    r = anonymous.get("/timeline?camera=cam1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=" + quote("/timeline?camera=cam1", safe="")
    login = anonymous.get("/login?next=//evil.example/")
    assert login.status_code == 200
    assert '"next": "/"' in login.text
    assert anonymous.get("/static/app.js").status_code == 200

    viewer = as_role(app, Role.VIEWER)
    live = viewer.get("/")
    assert live.status_code == 200
    for shown in ('href="/"', 'href="/timeline"', 'href="/events"'):
        assert shown in live.text
    for hidden in ('href="/cases"', 'href="/audit"', 'href="/exports"', 'href="/system"'):
        assert hidden not in live.text
    assert viewer.get("/audit").status_code == 403
    assert viewer.get("/login", follow_redirects=False).status_code == 303

    inspector = as_role(app, Role.INSPECTOR)
    landing = inspector.get("/", follow_redirects=False)
    assert landing.status_code == 303
    # The first page of the role's navigation: the inspection pack.
    assert landing.headers["location"] == "/inspection"
    assert inspector.get("/timeline").status_code == 403
    system = inspector.get("/system")
    assert system.status_code == 200
    assert "cam1" in system.text
    assert "inspector" in system.text
    assert 'href="/exports"' not in system.text
    assert 'href="/cases"' in system.text

    operator = as_role(app, Role.OPERATOR)
    for page in ("/", "/timeline", "/events", "/exports"):
        assert operator.get(page).status_code == 200, page


def test_a_browser_gets_a_page_for_an_unknown_url_and_the_api_keeps_json(app: FastAPI,
                                                                        node: Node) -> None:
    anonymous = client(app)
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for c in (anonymous, as_role(app, Role.VIEWER)):
        page = c.get("/no/such/page", headers=browser)
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert "Page not found" in page.text
        assert "/no/such/page" in page.text
        assert node.config.node.name in page.text
        assert 'href="/static/app.css"' in page.text  # the site's own style
    # The path is shown escaped, never as markup.
    assert "<script>" not in anonymous.get("/<script>x", headers=browser).text
    # Scripts and API clients keep the JSON they parse, whatever they accept.
    script = anonymous.get("/no/such/page")
    assert script.status_code == 404
    assert script.json() == {"detail": "Not Found"}
    api = anonymous.get("/api/no/such/route", headers=browser)
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}


def test_every_page_links_the_favicon_which_is_served(app: FastAPI) -> None:
    anonymous = client(app)
    icon = anonymous.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.lstrip().startswith(b"<svg")
    assert anonymous.get("/static/favicon.svg").content == icon.content
    link = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
    assert link in anonymous.get("/login").text
    assert link in as_role(app, Role.VIEWER).get("/").text
    assert link in anonymous.get("/nowhere", headers={"Accept": "text/html"}).text
