"""Cases, face search, alerts, the gallery, subject access and the inspection pack through the
real API (in-process), with real photos from the shared data as subjects and as the faces
recorded (sealed descriptors, as the event maintainer stores them).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import insert

from conftest import require
from custodes.analytics.worker import FaceTrack
from custodes.api.deps import route_table
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.audit.report import inspection_facts, render_markdown
from custodes.auth.roles import Role
from custodes.config import parse_config
from custodes.faces.calibration import MatchLevel
from custodes.faces.watchlist import Watchlist
from custodes.media import ffmpeg_exe
from custodes.privacy.cases import Cases, descriptor_gaps
from custodes.record.manifest import verify_bundle
from custodes.store import schema
from custodes.vision.embedding import FaceEmbedder
from footage import add_segments
from people import F32, People
from test_auth import (
    add_user,
    audit_entries,
    get_users_of,
    make_app,
    node_config,
    signed_in,
)

HOUR = 3600.0
DAY = 24 * HOUR
NOW = time.time()
SCOPE = (NOW - 2 * DAY, NOW - DAY)
JPEG = "image/jpeg"
HAMILTON = "video/face_recognition_short_hamilton_clip.mp4"
MIRANDA = "faces/face_recognition/Lin-Manuel_Miranda/lin-manuel-miranda.png"


def build_node(root: Path, embedder: FaceEmbedder, profile: str = "police") -> Iterator[Node]:
    config = {**node_config(root), "profile": profile}
    node = Node(parse_config(yaml.safe_dump(config)))
    # The module's embedder, so that each test does not load the network again.
    node.cases = Cases(node.store, node.keys, node.audit, node.config.profile,
                       known_cameras=node.config.cameras, embedder=embedder,
                       descriptors=node.descriptors,
                       descriptors_off=descriptor_gaps(node.config))
    node.watchlist = Watchlist(node.cases, node.store, node.audit, node.bus)
    node.layout.create()
    node.store.open()
    try:
        yield node
    finally:
        node.store.close()


@pytest.fixture
def node(tmp_path: Path, embedder: FaceEmbedder) -> Iterator[Node]:
    yield from build_node(tmp_path, embedder)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def add_face(node: Node, camera: str, start: float, vector: F32 | None, *,
             snapshot: bytes | None = None) -> int:
    """A face track as the event maintainer stores it: an event (with its redacted snapshot
    file) and the sealed descriptor (none when ``vector`` is None)."""
    relative = None
    if snapshot is not None:
        relative = f"{camera}/face-{start:.0f}.jpg"
        (node.layout.snapshots / camera).mkdir(parents=True, exist_ok=True)
        (node.layout.snapshots / relative).write_bytes(snapshot)
    sealed = None if vector is None else node.descriptors.seal(
        np.asarray(vector, np.float32).tobytes(), camera, start)

    def write(conn: Any) -> int:
        event_id = conn.execute(insert(schema.events).values(
            camera=camera, kind="face", start=start, end=start + 4, data="{}",
            snapshot=relative).returning(schema.events.c.id)).scalar_one()
        return int(conn.execute(insert(schema.faces).values(
            camera=camera, start=start, end=start + 4, detections=5, box="[0, 0, 80, 80]",
            quality=0.9, embedding=None, sealed=sealed, event_id=event_id,
        ).returning(schema.faces.c.id)).scalar_one())

    return node.store.write(write)


def case_form(**changes: Any) -> dict[str, Any]:
    return {
        "reference": "court order 2026/17", "legal_basis": "Code of criminal procedure §100",
        "purpose": "find the missing person", "cameras": ["cam1", "cam2"],
        "start": str(SCOPE[0]), "end": str(SCOPE[1]), "expires_at": str(NOW + 7 * DAY),
        **changes,
    }


def photo_files(photos: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (f"subject-{i}.jpg", p, JPEG)) for i, p in enumerate(photos)]


def blank_png() -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((120, 160, 3), 200, np.uint8))
    assert ok
    return encoded.tobytes()


# -- the whole flow ---------------------------------------------------------------------------


def test_open_approve_search_close(app: FastAPI, node: Node, people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    bob = signed_in(app, add_user(app, "bob", Role.APPROVER))
    t0 = SCOPE[0]
    ok, snapshot = cv2.imencode(".jpg", np.zeros((90, 160, 3), np.uint8))  # a stand-in
    assert ok
    match, possible = people.same_at(MatchLevel.MATCH), people.same_at(MatchLevel.POSSIBLE)
    inside = {add_face(node, "cam1", t0 + HOUR, match[0], snapshot=snapshot.tobytes()),
              add_face(node, "cam2", t0 + 5 * HOUR, possible[0])}
    outside = add_face(node, "cam1", t0 - HOUR, people.same[2])  # before the scope
    stranger = add_face(node, "cam1", t0 + 2 * HOUR, people.other[0])

    r = alice.post("/api/cases", data=case_form(labels=["missing person"]),
                   files=photo_files(people.subject_photos))
    assert r.status_code == 201, r.text
    case = r.json()
    assert (case["status"], case["opened_by"]) == ("pending", "alice")
    assert [s["label"] for s in case["subjects"]] == ["missing person", "subject 2"]
    url = f"/api/cases/{case['id']}"

    # Not approved yet: no search. And alice cannot approve her own case, even as approver.
    r = alice.post(f"{url}/search", json={})
    assert (r.status_code, r.json()["detail"]) == (403, "the case has not been approved")
    r = alice.post(f"{url}/approve", json={"note": "mine"})
    assert r.status_code == 403
    assert r.json()["detail"] == "the investigator role lacks the permission 'case.approve'"
    # Given the approver role later, she still may not approve the case she opened.
    users = get_users_of(app)
    users.update("alice", role=Role.APPROVER)
    r = alice.post(f"{url}/approve", json={})
    assert (r.status_code, r.json()["detail"]) == (
        403, "a case cannot be approved by the user who opened it")
    users.update("alice", role=Role.INVESTIGATOR)

    r = bob.post(f"{url}/approve", json={"note": "order checked"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["decided_by"] == "bob"
    assert len(r.json()["holds"]) == 2

    r = alice.post(f"{url}/search", json={"k": 50})
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["coverage"]["searchable"]) == ("found", 3)
    hits = r.json()["hits"]
    assert {h["face_id"] for h in hits} == inside
    assert outside not in {h["face_id"] for h in hits}
    assert stranger not in {h["face_id"] for h in hits}
    first = next(h for h in hits if h["camera"] == "cam1")
    assert first["timeline_url"] == f"/timeline?camera=cam1&at={t0 + HOUR:.0f}"
    shot = alice.get(first["snapshot_url"])
    assert (shot.status_code, shot.headers["content-type"]) == (200, JPEG)
    assert first["level"] == "match"
    assert first["subject_id"] in {s["id"] for s in case["subjects"]}
    assert first["meaning"].startswith("Match (distance below 0.40).")
    # A possible hit is ranked but names nobody: no subject, no subject photo.
    unnamed = next(h for h in hits if h["camera"] == "cam2")
    assert (unnamed["level"], unnamed["subject_id"], unnamed["subject_crop_url"]) == (
        "possible", None, None)
    assert unnamed["meaning"].startswith("Possible match only")
    crop = alice.get(first["subject_crop_url"])
    assert crop.status_code == 200
    assert cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR) is not None
    assert crop.headers["cache-control"] == "no-store"

    # Narrower is honoured; wider refused with the reason.
    r = alice.post(f"{url}/search", json={"cameras": ["cam2"]})
    assert [h["camera"] for h in r.json()["hits"]] == ["cam2"]
    r = alice.post(f"{url}/search", json={"start": t0 - DAY})
    assert (r.status_code, r.json()["detail"]) == (403, "the time asked for is outside the "
                                                        "case's scope")

    r = alice.post(f"{url}/close", json={"note": "found"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"
    assert all(s["wiped"] and s["crop_url"] is None for s in r.json()["subjects"])
    r = alice.post(f"{url}/search", json={})
    assert (r.status_code, r.json()["detail"]) == (403, "the case is closed")
    assert alice.get(first["subject_crop_url"]).status_code == 403

    searches = [(e["actor"], e["outcome"]) for e in audit_entries(node, Action.FACE_SEARCH)]
    assert searches == [("alice", "refused"), ("alice", "ok"), ("alice", "ok"),
                        ("alice", "refused"), ("alice", "refused")]
    listed = alice.get("/api/cases").json()
    assert listed["search_allowed"] is True
    assert [c["id"] for c in listed["cases"]] == [case["id"]]


def test_a_search_says_what_it_could_search(app: FastAPI, node: Node, people: People) -> None:
    """Tracks without descriptors are "nothing could be searched", with the counts and the
    setting that causes it; compared tracks with no hit are "searched N, none near enough"."""
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    bob = signed_in(app, add_user(app, "bob", Role.APPROVER))
    t0 = SCOPE[0]
    for i in range(3):
        add_face(node, "cam1", t0 + HOUR + 10 * i, None)
    add_face(node, "cam2", t0 + HOUR, None)
    r = alice.post("/api/cases", data=case_form(), files=photo_files(people.subject_photos))
    assert r.status_code == 201, r.text
    url = f"/api/cases/{r.json()['id']}"
    assert bob.post(f"{url}/approve", json={}).status_code == 200

    r = alice.post(f"{url}/search", json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["hits"], body["outcome"]) == ([], "nothing_searchable")
    off = ("cameras.{}.analytics.faces.embeddings is off in the config: faces are detected "
           "(to blur them) but no descriptor is stored")
    assert body["coverage"] == {
        "tracks": 4, "searchable": 0, "without_descriptors": 4, "cameras": [
            {"camera": "cam1", "tracks": 3, "searchable": 0, "without_descriptors": 3,
             "reason": off.format("cam1")},
            {"camera": "cam2", "tracks": 1, "searchable": 0, "without_descriptors": 1,
             "reason": off.format("cam2")}]}
    assert body["summary"].startswith("Nothing could be searched: 4 face tracks recorded")
    assert off.format("cam1") in body["summary"]

    r = alice.post(f"{url}/search", json={"start": t0, "end": t0 + HOUR / 2})
    assert (r.json()["outcome"], r.json()["coverage"]["tracks"]) == ("no_tracks", 0)

    add_face(node, "cam2", t0 + 2 * HOUR, people.other[0])
    body = alice.post(f"{url}/search", json={}).json()
    assert (body["hits"], body["outcome"]) == ([], "none_near")
    assert (body["coverage"]["tracks"], body["coverage"]["searchable"]) == (5, 1)
    assert body["summary"].startswith("Searched 1 face track: None is within 0.60")
    assert "4 of the 5 face tracks could not be searched" in body["summary"]
    assert json.loads(audit_entries(node, Action.FACE_SEARCH)[-1]["detail"])["outcome"] == (
        "none_near")


def test_a_missing_case_is_404_and_a_bad_request_400(app: FastAPI, people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    assert alice.get("/api/cases/99").status_code == 404
    assert alice.post("/api/cases/99/search", json={}).status_code == 404
    r = alice.post("/api/cases", data=case_form(end=str(SCOPE[0] - 1)),
                   files=photo_files(people.subject_photos[:1]))
    assert r.status_code == 400
    assert "the scope must end after it starts" in r.json()["detail"]
    r = alice.post("/api/cases", data=case_form(cameras=["cam9"]),
                   files=photo_files(people.subject_photos[:1]))
    assert (r.status_code, r.json()["detail"]) == (400, "unknown camera(s) cam9")


def test_a_photo_that_is_no_image_or_shows_no_face_is_400(app: FastAPI, people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    r = alice.post("/api/cases", data=case_form(), files=photo_files([b"%PDF-1.4 not an image"]))
    assert r.status_code == 400
    assert "not a JPEG, PNG, WebP, BMP or GIF image" in r.json()["detail"]
    r = alice.post("/api/cases", data=case_form(), files=photo_files([blank_png()]))
    assert r.status_code == 400
    assert "no face found in the photo" in r.json()["detail"]
    too_big = people.subject_photos[0] + b"\0" * (10 * 1024 * 1024)
    r = alice.post("/api/cases", data=case_form(), files=photo_files([too_big]))
    assert r.status_code == 413
    assert alice.get("/api/cases").json()["cases"] == []


def test_a_viewer_is_refused_every_case_route(app: FastAPI) -> None:
    viewer = signed_in(app, add_user(app, "victor", Role.VIEWER))
    prefixes = ("/api/cases", "/api/alerts", "/api/gallery", "/api/subject-access",
                "/api/inspection")
    routes = [r for r in route_table(app) if r.path.startswith(prefixes)]
    assert len(routes) >= 15
    for route in routes:
        path = route.path.replace("{case_id}", "1").replace("{subject_id}", "1") \
            .replace("{alert_id}", "1").replace("{person_id}", "1") \
            .replace("{request_id}", "1") \
            .replace("{export_id}", "20260101-000000-0123abcd")
        for method in route.methods:
            r = viewer.request(method, path)
            assert r.status_code == 403, (method, path, r.text)
            assert "the viewer role lacks the permission" in r.json()["detail"]


def test_the_school_profile_refuses_identification_with_its_reason(
        tmp_path: Path, embedder: FaceEmbedder, people: People) -> None:
    for node in build_node(tmp_path, embedder, profile="school"):
        app = make_app(node)
        alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
        listed = alice.get("/api/cases").json()
        assert (listed["search_allowed"], listed["refusal"]) == (
            False, "the school profile does not allow face search")
        r = alice.post("/api/cases", data=case_form(),
                       files=photo_files(people.subject_photos[:1]))
        assert (r.status_code, r.json()["detail"]) == (
            403, "the school profile does not allow face search")
        # Refused for the profile even when the photo would not do: the profile comes first.
        r = alice.post("/api/cases", data=case_form(), files=photo_files([b"junk"]))
        assert r.status_code == 403
        assert alice.post("/api/cases/1/search", json={}).status_code == 403
        enroll = alice.post("/api/gallery", data={
            "reference": "x", "basis_kind": "consent", "basis_reference": "c-1",
            "expires_at": str(NOW + DAY)}, files=photo_files(people.subject_photos[:1]))
        assert (enroll.status_code, enroll.json()["detail"]) == (
            403, "the school profile does not allow enroll")
        refused = [(e["action"], e["outcome"]) for e in audit_entries(node)
                   if e["action"] in ("case.open", "face.search", "gallery.enroll")]
        assert refused == [("case.open", "refused"), ("case.open", "refused"),
                           ("face.search", "refused"), ("gallery.enroll", "refused")]
        page = alice.get("/cases")
        assert page.status_code == 200
        assert "Identification is not available in this deployment" in page.text
        assert 'id="new-case"' not in page.text


# -- alerts and the gallery --------------------------------------------------------------------


def test_watchlist_alerts_are_confirmed_by_a_second_person(app: FastAPI, node: Node,
                                                           people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    carol = signed_in(app, add_user(app, "carol", Role.INVESTIGATOR))
    bob = signed_in(app, add_user(app, "bob", Role.APPROVER))
    scope = (NOW - HOUR, NOW + DAY)
    r = alice.post("/api/cases", data=case_form(start=str(scope[0]), end=str(scope[1]),
                                                watchlist="true", members=["carol"]),
                   files=photo_files(people.subject_photos))
    case_id = r.json()["id"]
    assert r.json()["watchlist"] is True
    assert bob.post(f"/api/cases/{case_id}/approve", json={}).status_code == 200
    match = people.same_at(MatchLevel.MATCH)[0]
    vector = np.asarray(match, np.float32).tobytes()
    face_id = add_face(node, "cam1", NOW, match)
    [alert] = node.watchlist.match(face_id, FaceTrack("cam1", NOW, NOW + 3, 5, (0, 0, 80, 80),
                                                      0.9, vector, None))
    # An alert raised before the calibration, at a distance now known to be only "possible".
    old = node.store.write(lambda conn: int(conn.execute(insert(schema.case_alerts).values(
        case_id=case_id, subject_id=alert.subject_id, face_id=None, camera="cam1",
        seen_at=NOW - 60, distance=0.55, created_at=NOW - 60, status="candidate",
    ).returning(schema.case_alerts.c.id)).scalar_one()))
    listed = alice.get(f"/api/cases/{case_id}/alerts").json()
    assert [(a["id"], a["status"], a["level"], a["subject_id"]) for a in listed["alerts"]] == [
        (old, "candidate", "possible", None), (alert.id, "candidate", "match", alert.subject_id)]
    assert listed["alerts"][1]["meaning"].startswith("Match (distance below 0.40).")
    assert listed["alerts"][0]["subject_crop_url"] is None
    r = alice.post(f"/api/alerts/{alert.id}/confirm")
    assert (r.status_code, r.json()["detail"]) == (
        403, "an alert must be confirmed by a second person, not the user who opened the case")
    r = carol.post(f"/api/alerts/{alert.id}/confirm")
    assert (r.status_code, r.json()["status"], r.json()["decided_by"]) == (200, "confirmed",
                                                                          "carol")
    r = bob.post(f"/api/alerts/{alert.id}/dismiss")
    assert (r.status_code, r.json()["detail"]) == (403, "the alert is already confirmed")
    assert carol.post("/api/alerts/99/confirm").status_code == 404


def test_the_gallery_enrolls_lists_shows_and_deletes(app: FastAPI, node: Node,
                                                     people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    form = {"reference": "case 2026/17 subject A", "basis_kind": "case",
            "basis_reference": "2026/17", "expires_at": str(NOW + 30 * DAY)}
    # A case basis must name an approved, active case (issue 10, item 15).
    r = alice.post("/api/gallery", data=form, files=photo_files(people.subject_photos))
    assert (r.status_code, r.json()["detail"]) == (403, "a case basis must name an approved, "
                                                        "active case: there is none with "
                                                        "reference '2026/17'")
    node.store.write(lambda conn: conn.execute(insert(schema.cases).values(
        reference="2026/17", legal_basis="court order", purpose="test", cameras='["cam1"]',
        scope_start=NOW - DAY, scope_end=NOW, watchlist=0, opened_by="carol", opened_at=NOW,
        status="approved", decided_by="bob", decided_at=NOW, expires_at=NOW + 60 * DAY)))
    r = alice.post("/api/gallery", data=form, files=photo_files(people.subject_photos))
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    [person] = alice.get("/api/gallery").json()["people"]
    assert (person["id"], person["photos"], person["legal_basis"], person["approved_by"]) == (
        person_id, 2, {"kind": "case", "reference": "2026/17"}, "bob")
    crop = alice.get(person["crop_url"])
    assert (crop.status_code, crop.headers["content-type"]) == (200, JPEG)
    r = alice.post("/api/gallery", data={**form, "expires_at": str(NOW + 400 * DAY)},
                   files=photo_files(people.subject_photos))
    assert (r.status_code, r.json()["detail"]) == (403, "the expiry is more than 365 days "
                                                        "ahead")
    assert alice.delete(f"/api/gallery/{person_id}").status_code == 204
    assert alice.delete(f"/api/gallery/{person_id}").status_code == 404
    assert alice.get("/api/gallery").json()["people"] == []
    actions = [e["action"] for e in audit_entries(node) if e["action"].startswith("gallery.")]
    assert actions == ["gallery.enroll", "gallery.enroll", "gallery.list", "gallery.view",
                       "gallery.enroll", "gallery.delete", "gallery.delete", "gallery.list"]


def test_a_consent_entry_waits_for_a_second_person(app: FastAPI, people: People) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    dora = signed_in(app, add_user(app, "dora", Role.APPROVER))
    r = alice.post("/api/gallery", data={
        "reference": "volunteer 4", "basis_kind": "consent", "basis_reference": "form 88",
        "expires_at": str(NOW + 30 * DAY)}, files=photo_files(people.subject_photos[:1]))
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    [person] = alice.get("/api/gallery").json()["people"]
    assert person["approved_by"] is None  # kept, but matched against nobody yet
    r = alice.post(f"/api/gallery/{person_id}/approve")
    assert (r.status_code, r.json()["detail"]) == (
        403, "the investigator role lacks the permission 'case.approve'")
    r = dora.post(f"/api/gallery/{person_id}/approve", json={"note": "form seen"})
    assert (r.status_code, r.json()["approved_by"]) == (200, "dora")
    assert dora.post(f"/api/gallery/{person_id}/approve").status_code == 403
    assert dora.post("/api/gallery/999/approve").status_code == 404


# -- the inspection pack -----------------------------------------------------------------------


def test_the_inspection_pack_is_a_zip_that_verifies(app: FastAPI, node: Node,
                                                    tmp_path: Path) -> None:
    ines = signed_in(app, add_user(app, "ines", Role.INSPECTOR))
    r = ines.get("/api/inspection/pack", params={"days": 30})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unzipped")
    [folder] = {n.split("/")[0] for n in names}
    assert folder.startswith("inspection-custodes-")
    pack = tmp_path / "unzipped" / folder
    assert {"report.md", "report.json", "audit-log.jsonl", "manifest.json",
            "manifest.sig"} <= {p.name for p in pack.iterdir()}
    report = verify_bundle(pack, node.keys.public_pem)
    assert report.ok, report.problems
    assert [e["actor"] for e in audit_entries(node, Action.INSPECTION_REPORT)] == ["ines"]
    assert not any(node.layout.cache.iterdir())  # the work folder is gone
    assert ines.get("/api/inspection/pack", params={"days": 0}).status_code == 422
    viewer = signed_in(app, add_user(app, "victor", Role.VIEWER))
    assert viewer.get("/api/inspection/pack").status_code == 403


# -- subject access ------------------------------------------------------------------------


@pytest.mark.slow
def test_subject_access_exports_only_the_requester_visible(
        app: FastAPI, node: Node, shared_data: Path, tmp_path: Path) -> None:
    require((shared_data / HAMILTON).is_file() and (shared_data / MIRANDA).is_file(),
            "the Hamilton clip and Miranda's photo")
    # 2 s of Miranda singing towards the camera, at 10 fps: one recorded segment.
    clip = tmp_path / "stage.mp4"
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", "5.5",
        "-i", str(shared_data / HAMILTON), "-t", "2", "-vf", "fps=10,scale=640:-2",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-an", str(clip),
    ], check=True)
    t0 = NOW - HOUR
    add_segments(node.store, node.layout, "cam1", [t0], [clip])
    dora = signed_in(app, add_user(app, "dora", Role.APPROVER))
    eve = signed_in(app, add_user(app, "eve", Role.APPROVER))
    form = sar_form(start=str(t0), end=str(t0 + 2), reference="access request 2026/3")
    r = dora.post("/api/subject-access/requests", data=form,
                  files={"photo": ("me.jpg", blank_png(), JPEG)})
    assert (r.status_code, r.json()["detail"]) == (
        400, "the requester's photo: no face of at least 40 px found in the photo")
    photo = (shared_data / MIRANDA).read_bytes()
    r = dora.post("/api/subject-access/requests", data=form,
                  files={"photo": ("me.png", photo, "image/png")})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    assert eve.post(f"/api/subject-access/requests/{request_id}/approve",
                    json={"note": "passport matches the photo"}).status_code == 200
    r = dora.post("/api/subject-access", json={"request": request_id})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        [listed] = dora.get("/api/subject-access").json()["exports"]
        if listed["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert listed["state"] == "done", listed
    download = dora.get(listed["download_url"])
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        zf.extractall(tmp_path / "unzipped")
    bundle = tmp_path / "unzipped" / export_id
    report = verify_bundle(bundle, node.keys.public_pem)
    assert report.ok, report.problems
    assert report.manifest is not None
    redaction = report.manifest["redaction"]
    assert redaction["keep"] == "subject"
    assert redaction["subject_access"] == "access request 2026/3"
    # Whether Miranda is shown is the match rule's business (tests/test_subject_access.py:
    # only a calibrated "match" track is disclosed); here, that the rule ran on the export.
    assert isinstance(redaction["faces_kept"], int)
    # Listed among the exports as unredacted: an operator may not download it, nor may an
    # officer who did not answer the request.
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    [other] = olga.get("/api/exports").json()["exports"]
    assert (other["id"], other["redacted"]) == (export_id, False)
    assert olga.get(f"/api/exports/{export_id}/download").status_code == 403
    fred = signed_in(app, add_user(app, "fred", Role.APPROVER))
    assert fred.get(listed["download_url"]).status_code == 403
    assert eve.get(listed["download_url"]).status_code == 200
    # One request, one export.
    r = dora.post("/api/subject-access", json={"request": request_id})
    assert (r.status_code, r.json()["detail"]) == (
        403, "the request's one export was made already")
    actions = [(e["actor"], e["action"], e["outcome"]) for e in audit_entries(node)
               if e["action"].startswith(("subject_access.", "export"))]
    assert actions == [
        ("dora", "subject_access.record", "ok"), ("eve", "subject_access.approve", "ok"),
        ("dora", "subject_access.export", "ok"), ("dora", "export", "ok"),
        ("dora", "export.download", "ok"), ("olga", "export", "refused"),
        ("fred", "export.download", "refused"), ("eve", "export.download", "ok"),
        ("dora", "subject_access.export", "refused")]


def sar_form(**changes: Any) -> dict[str, Any]:
    return {"reference": "SAR 2026/3", "requester": "Pat Pupil",
            "identity_check": "passport seen in person", "camera": "cam1",
            "start": str(NOW - 2 * HOUR), "end": str(NOW - 1.5 * HOUR), **changes}


def test_subject_access_needs_a_recorded_request_decided_by_a_second_person(
        tmp_path: Path, embedder: FaceEmbedder, people: People) -> None:
    """Issue 10, item 6: in a school, one officer alone could upload anyone's photo and get
    a video in which that person alone is visible. Now the request is recorded (identity
    check: how, by whom, when), decided by a second officer, limited in span and rate, and
    exported once, by the officers who answered it."""
    for node in build_node(tmp_path, embedder, profile="school"):
        app = make_app(node)
        dora = signed_in(app, add_user(app, "dora", Role.APPROVER))
        eve = signed_in(app, add_user(app, "eve", Role.APPROVER))
        fred = signed_in(app, add_user(app, "fred", Role.APPROVER))
        anyone = {"photo": ("anyone.jpg", people.subject_photos[0], JPEG)}
        # The attack as it was: straight to an export with a photo. There is no such call.
        r = dora.post("/api/subject-access", data={"camera": "cam1", "start": str(NOW - HOUR),
                                                   "end": str(NOW), "reference": "x"},
                      files=anyone)
        assert r.status_code == 422
        assert dora.post("/api/subject-access", json={"request": 1}).status_code == 404

        r = dora.post("/api/subject-access/requests", data=sar_form(), files=anyone)
        assert r.status_code == 201, r.text
        first = r.json()
        assert (first["status"], first["recorded_by"], first["identity_checked_by"]) == (
            "pending", "dora", "dora")
        url = f"/api/subject-access/requests/{first['id']}"
        # Alone, dora neither decides nor exports it.
        r = dora.post(f"{url}/approve", json={})
        assert (r.status_code, r.json()["detail"]) == (
            403, "a subject access request must be decided by a second person, not the one "
                 "who recorded it")
        r = dora.post("/api/subject-access", json={"request": first["id"]})
        assert (r.status_code, r.json()["detail"]) == (403, "the request has not been approved")
        # The second officer compares the photo with the identity check, then approves.
        shown = eve.get(first["photo_url"])
        assert (shown.status_code, shown.headers["content-type"]) == (200, JPEG)
        assert shown.headers["cache-control"] == "no-store"
        r = eve.post(f"{url}/approve", json={"note": "photo matches the passport"})
        assert (r.status_code, r.json()["status"], r.json()["decided_by"]) == (
            200, "approved", "eve")
        assert eve.get(first["photo_url"]).status_code == 403  # shown only while pending
        r = fred.post("/api/subject-access", json={"request": first["id"]})
        assert (r.status_code, r.json()["detail"]) == (
            403, "only the officers who recorded and decided the request may export it")
        # No footage in the span: refused before the request is spent.
        r = dora.post("/api/subject-access", json={"request": first["id"]})
        assert r.status_code == 404
        assert dora.get(url).json()["status"] == "approved"

        # Whoever checked the identity does not decide either.
        r = dora.post("/api/subject-access/requests", files=anyone,
                      data=sar_form(requester="  pat PUPIL", identity_checked_by="eve"))
        assert r.status_code == 201, r.text
        second = r.json()["id"]
        r = eve.post(f"/api/subject-access/requests/{second}/approve", json={})
        assert (r.status_code, r.json()["detail"]) == (
            403, "a subject access request cannot be decided by the person who checked the "
                 "requester's identity")
        assert fred.post(f"/api/subject-access/requests/{second}/reject",
                         json={}).json()["status"] == "rejected"
        # Rate: two requests for one person in 30 days (a school), however the name is typed.
        r = fred.post("/api/subject-access/requests", data=sar_form(requester="Pat pupil"),
                      files=anyone)
        assert (r.status_code, r.json()["detail"]) == (
            403, "this requester has had 2 requests in the last 30 days (at most 2)")
        # Scope: two hours of one camera at most in a school.
        r = fred.post("/api/subject-access/requests", files=anyone, data=sar_form(
            requester="Sam", start=str(NOW - 4 * HOUR), end=str(NOW - HOUR)))
        assert (r.status_code, r.json()["detail"]) == (
            403, "a subject access request covers at most 2 hours under the school profile")
        r = fred.post("/api/subject-access/requests", files=anyone,
                      data=sar_form(requester="Sam", identity_checked_by="nobody"))
        assert r.status_code == 403
        assert "nobody is not an enabled user" in r.json()["detail"]
        r = fred.post("/api/subject-access/requests", files=anyone,
                      data=sar_form(requester="Sam", identity_checked_at=str(NOW + DAY)))
        assert r.status_code == 400

        # The inspection pack lists both requests, by reference, with who did what.
        facts = inspection_facts(node.config, node.store, node.keys, since=NOW - DAY)
        listed = {x["id"]: x for x in facts["subject_access"]}
        assert (listed[first["id"]]["recorded_by"], listed[first["id"]]["decided_by"],
                listed[first["id"]]["identity_check"]) == ("dora", "eve",
                                                            "passport seen in person")
        assert listed[second]["status"] == "rejected"
        assert "Pat" not in json.dumps(facts)  # the requester's name stays on the node
        assert "| passport seen in person, dora," in render_markdown(facts)


def test_case_routes_apply_per_camera_limits(app: FastAPI, node: Node, people: People) -> None:
    """Issue 10, item 12: approving, reading subject crops, listing and reading a case need
    every camera of it; /api/system/retention shows only the caller's cameras."""
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    bob = signed_in(app, add_user(app, "bob", Role.APPROVER))
    bert = signed_in(app, add_user(app, "bert", Role.APPROVER, ["cam2"]))
    dave = signed_in(app, add_user(app, "dave", Role.INVESTIGATOR))  # not on the case
    r = alice.post("/api/cases", data=case_form(), files=photo_files(people.subject_photos))
    case = r.json()
    url = f"/api/cases/{case['id']}"
    r = bert.post(f"{url}/approve", json={})
    assert (r.status_code, r.json()["detail"]) == (
        403, f"bert has no access to camera(s) cam1 of case {case['id']}")
    assert bob.post(f"{url}/approve", json={}).status_code == 200
    crop = f"{url}/subjects/{case['subjects'][0]['id']}/crop.jpg"
    for who, reason in ((bert, "has no access to camera(s) cam1"),
                        (dave, "is not a member of case")):
        assert who.get("/api/cases").json()["cases"] == []
        for path in (url, crop):
            r = who.get(path)
            assert r.status_code == 403, (path, r.text)
            assert reason in r.json()["detail"]
    assert [c["id"] for c in bob.get("/api/cases").json()["cases"]] == [case["id"]]

    def add_pass(conn: Any) -> None:
        conn.execute(insert(schema.deletion_passes).values(
            at=NOW, trigger="age", segments=3, bytes=300, details=json.dumps({
                "cam1": {"segments": 2, "bytes": 200, "from": 0, "to": 1},
                "cam2": {"segments": 1, "bytes": 100, "from": 0, "to": 1}})))

    node.store.write(add_pass)
    scoped = bert.get("/api/system/retention").json()
    assert [c["camera"] for c in scoped["cameras"]] == ["cam2"]
    assert [h["camera"] for h in scoped["holds"]] == ["cam2"]
    [deleted] = scoped["passes"]
    assert (deleted["segments"], deleted["bytes"], list(deleted["cameras"])) == (1, 100,
                                                                                ["cam2"])
    everything = bob.get("/api/system/retention").json()
    assert sorted(h["camera"] for h in everything["holds"]) == ["cam1", "cam2"]
    assert everything["passes"][0]["bytes"] == 300
