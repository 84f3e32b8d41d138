"""A case's use log, the record an AI-Act-style log needs: each search with its start and end,
the reference database and the input, every result; who verified each result (two people,
separately); the authorisation reference and time. Through the real API, with real photos as
subjects, and carried signed in an export made for the case.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Actor, Role
from custodes.faces.calibration import MatchLevel
from custodes.privacy.case_log import CASE_LOG_FILE
from custodes.record.bundle import create_export
from custodes.record.manifest import verify_bundle
from custodes.vision.embedding import FaceEmbedder
from footage import add_segments, encode_clips
from people import People
from test_auth import add_user, audit_entries, make_app, signed_in
from test_cases_api import DAY, HOUR, SCOPE, add_face, build_node, case_form, photo_files


@pytest.fixture
def node(tmp_path: Path, embedder: FaceEmbedder) -> Iterator[Node]:
    yield from build_node(tmp_path, embedder)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def test_searches_are_logged_verified_by_two_people_and_authorised(
    app: FastAPI, node: Node, people: People, tmp_path: Path
) -> None:
    alice = signed_in(app, add_user(app, "alice", Role.INVESTIGATOR))
    bob = signed_in(app, add_user(app, "bob", Role.APPROVER))
    carol = signed_in(app, add_user(app, "carol", Role.INVESTIGATOR))
    viewer = signed_in(app, add_user(app, "vera", Role.VIEWER))
    t0 = SCOPE[0]
    face = add_face(node, "cam1", t0 + HOUR, people.same_at(MatchLevel.MATCH)[0])
    r = alice.post("/api/cases", data=case_form(labels=["missing person"], members=["carol"]),
                   files=photo_files(people.subject_photos))
    assert r.status_code == 201, r.text
    case = r.json()
    url = f"/api/cases/{case['id']}"
    assert bob.post(f"{url}/approve", json={"note": "order checked"}).status_code == 200

    # The authorisation: an approver records the authority's reference and time, once.
    authorised = time.time() - 2 * DAY
    body = {"reference": "District court order 2026/17", "authorised_at": authorised}
    assert alice.post(f"{url}/authorisation", json=body).status_code == 403
    r = bob.post(f"{url}/authorisation", json=body)
    assert r.status_code == 201, r.text
    assert bob.post(f"{url}/authorisation", json={**body, "reference": "other"}).status_code \
        == 403

    before = time.time()
    r = alice.post(f"{url}/search", json={"k": 5})
    after = time.time()
    assert r.status_code == 200, r.text
    use_id = r.json()["use_id"]
    assert [h["face_id"] for h in r.json()["hits"]] == [face]

    log = alice.get(f"{url}/log").json()
    assert log["authorisation"]["reference"] == "District court order 2026/17"
    assert log["authorisation"]["authorised_at"] == pytest.approx(authorised)
    assert log["authorisation"]["recorded_by"] == "bob"
    [use] = log["uses"]
    assert use["id"] == use_id
    assert use["actor"] == "alice"
    assert before <= use["started_at"] <= use["ended_at"] <= after
    db = use["reference_db"]
    assert db["cameras"] == ["cam1", "cam2"]
    assert (db["start"], db["end"]) == (pytest.approx(SCOPE[0]), pytest.approx(SCOPE[1]))
    assert (db["faces_recorded"], db["newest_face_id"]) == (1, face)
    assert "128-d" in db["descriptor"]
    assert [s["label"] for s in use["input"]["subjects"]] == ["missing person", "subject 2"]
    [result] = use["results"]
    assert (result["rank"], result["face_id"], result["level"]) == (1, face, "match")
    assert result["verifications"] == []
    assert result["confirmed"] is False

    verify = f"{url}/uses/{use_id}/results/1/verify"
    assert viewer.post(verify, json={"verdict": "same_person"}).status_code == 403
    r = alice.post(verify, json={"verdict": "same_person", "note": "same jacket"})
    assert (r.status_code, r.json()["confirmed"]) == (200, False)
    assert alice.post(verify, json={"verdict": "same_person"}).status_code == 403  # once each
    r = carol.post(verify, json={"verdict": "same_person"})
    assert (r.status_code, r.json()["confirmed"]) == (200, True)
    assert alice.post(f"{url}/uses/{use_id}/results/9/verify",
                      json={"verdict": "same_person"}).status_code == 404
    assert alice.post(verify, json={"verdict": "probably"}).status_code == 422
    log = bob.get(f"{url}/log").json()
    checks = log["uses"][0]["results"][0]["verifications"]
    assert [(v["verified_by"], v["verdict"], v["note"]) for v in checks] == [
        ("alice", "same_person", "same jacket"), ("carol", "same_person", None)]
    assert viewer.get(f"{url}/log").status_code == 403
    page = alice.get(f"/cases/{case['id']}")
    assert page.status_code == 200
    assert 'id="use-log"' in page.text
    assert "/static/case_log.js" in page.text
    # (the viewer was refused by role, before the case: an `access` refusal)
    assert [e["outcome"] for e in audit_entries(node, Action.CASE_VERIFY)] == [
        "ok", "refused", "ok"]
    assert [e["outcome"] for e in audit_entries(node, Action.CASE_AUTHORISATION)] == [
        "ok", "refused"]  # alice, an investigator, was refused by role

    # An export made for the case carries the log, signed with the video.
    clips = encode_clips(tmp_path / "clips", count=2)
    add_segments(node.store, node.layout, "cam1", [t0 + HOUR, t0 + HOUR + 2], clips)
    bundle = create_export(node.store, node.layout, node.keys, node.audit, "cam1", t0 + HOUR,
                           t0 + HOUR + 4, tmp_path / "export",
                           actor=Actor("alice", Role.INVESTIGATOR), case=str(case["id"]))
    record = json.loads((bundle.folder / CASE_LOG_FILE).read_text())
    assert record["case"]["reference"] == case["reference"]
    assert record["authorisation"]["reference"] == "District court order 2026/17"
    assert record["uses"][0]["results"][0]["confirmed"] is True
    assert CASE_LOG_FILE in {f["name"] for f in bundle.manifest["files"]}
    assert verify_bundle(bundle.folder, node.keys.public_pem).ok
