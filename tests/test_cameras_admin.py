"""Cameras managed through the API: the config file written back with its comments, refused
edits naming the key (file untouched), roles, masked passwords, audit with file digests, and a
stream test against a simulated camera with a redacted picture.

The node here opens only its database (no worker runs): that a change is applied to a running
recorder is tests/test_browser_cameras.py's part.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from fastapi import FastAPI

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.config import load_config, parse_config
from custodes.config_edit import edit_config
from custodes.sim import SimServer
from custodes.sim.onvif import OnvifIdentity, OnvifSim, SimProfile
from test_auth import add_user, audit_entries, make_app, opened, signed_in

CONFIG = """\
# Test school: cameras are managed from the web UI from here on.
profile: school   # no identification at all

node:
  name: admin-test

sites:
  school:
    name: Test school   # the main building

cameras:
  # The front door, installed in 2024.
  door:
    site: school
    location: entrance
    purpose: who enters the building   # agreed with the DPO
    main_url: rtsp://127.0.0.1:1/door
    username: viewer
    password: ${DOOR_PASSWORD}
    record:
      segment_seconds: 4   # short for the test
  hall:
    site: school
    location: corridor
    purpose: the main corridor
    main_url: rtsp://127.0.0.1:1/hall

storage:
  path: var
"""

NEW = {"name": "stairs", "site": "school", "location": "corridor",
       "purpose": "the stairs to the first floor", "main_url": "rtsp://127.0.0.1:1/stairs"}


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOOR_PASSWORD", "door-secret-1")
    path = tmp_path / "custodes.yaml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    return path


@pytest.fixture
def node(config_file: Path) -> Iterator[Node]:
    yield from opened(Node(load_config(config_file), config_path=config_file))


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def admin(app: FastAPI, cameras: list[str] | None = None) -> Any:
    name = "admin2" if cameras is None else "admin-scoped"
    return signed_in(app, add_user(app, name, Role.ADMIN, cameras))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_added_camera_is_written_with_the_files_comments_and_audited(
    app: FastAPI, node: Node, config_file: Path
) -> None:
    before = sha(config_file)
    r = admin(app).post("/api/system/cameras", json=NEW)
    assert r.status_code == 201, r.text
    text = config_file.read_text()
    # Every comment and the order of what was there survive; the new camera follows.
    for line in CONFIG.splitlines():
        if "#" in line:
            assert line in text
    assert text.index("door:") < text.index("hall:") < text.index("stairs:") \
        < text.index("storage:")
    assert "${DOOR_PASSWORD}" in text  # written as written, never substituted
    assert yaml.safe_load(text)["cameras"]["stairs"] == {k: v for k, v in NEW.items()
                                                          if k != "name"}
    assert config_file.stat().st_mode & 0o777 == 0o640
    backup = config_file.with_name(config_file.name + ".bak")
    assert backup.read_text() == CONFIG
    assert load_config(config_file).cameras["stairs"].purpose == NEW["purpose"]
    assert "stairs" in node.config.cameras  # the running node has it
    assert "stairs" in (node.cases.known_cameras or ())
    [entry] = audit_entries(node, Action.CAMERA_ADD)
    detail = json.loads(entry["detail"])
    assert (entry["actor"], entry["target"], entry["outcome"]) == ("admin2", "stairs", "ok")
    assert detail["config_before"] == before == r.json()["config_before"]
    assert detail["config_after"] == sha(config_file)


@pytest.mark.parametrize("refusal", [
    ({"location": "classroom"}, "cameras.stairs.location", "not allowed in the school profile"),
    ({"site": "elsewhere"}, "cameras.stairs.site", "unknown site"),
    ({"main_url": "http://127.0.0.1/x"}, "cameras.stairs.main_url", "not an rtsp"),
    ({"name": "Stairs!"}, "cameras.Stairs!", "should match pattern"),
    ({"purpose": "x"}, "cameras.stairs.purpose", "at least 3"),
    ({"password": "p"}, "cameras.stairs.password", "needs a username"),
])
def test_invalid_cameras_are_refused_with_the_key_and_the_file_is_untouched(
    app: FastAPI, node: Node, config_file: Path, refusal: tuple[dict[str, str], str, str]
) -> None:
    change, key, why = refusal
    r = admin(app).post("/api/system/cameras", json={**NEW, **change})
    assert r.status_code == 400, r.text
    assert key in r.json()["detail"]
    assert why in r.json()["detail"]
    assert config_file.read_text() == CONFIG
    assert not config_file.with_name(config_file.name + ".bak").exists()
    assert set(node.config.cameras) == {"door", "hall"}
    [refused] = audit_entries(node, Action.CAMERA_ADD)
    assert refused["outcome"] == "refused"
    assert key in json.loads(refused["detail"])["reason"]


def test_edits_keep_the_password_unless_given_and_never_show_it(
    app: FastAPI, node: Node, config_file: Path
) -> None:
    c = admin(app)
    listed = c.get("/api/system/cameras")
    assert listed.status_code == 200
    door = next(cam for cam in listed.json()["cameras"] if cam["name"] == "door")
    assert door["password_set"] is True
    assert "door-secret-1" not in listed.text
    # Moved to the other corridor: the password stays the ${ENV} reference it was.
    form = {k: door[k] for k in ("site", "location", "main_url", "username")}
    r = c.put("/api/system/cameras/door", json={**form, "purpose": "the side door"})
    assert r.status_code == 200, r.text
    saved = yaml.safe_load(config_file.read_text())["cameras"]["door"]
    assert saved["password"] == "${DOOR_PASSWORD}"
    assert saved["purpose"] == "the side door"
    assert saved["record"] == {"segment_seconds": 4}  # what the form does not set is kept
    assert "# agreed with the DPO" in config_file.read_text()
    # A new password is written to its own field, and not returned.
    r = c.put("/api/system/cameras/door", json={**form, "purpose": "the side door",
                                                 "password": "new:pass/word@1"})
    assert r.status_code == 200
    assert "new:pass/word@1" not in r.text
    assert yaml.safe_load(config_file.read_text())["cameras"]["door"]["password"] \
        == "new:pass/word@1"
    assert node.config.cameras["door"].main_source == \
        "rtsp://viewer:new%3Apass%2Fword%401@127.0.0.1:1/door"
    entries = audit_entries(node, Action.CAMERA_UPDATE)
    assert "new:pass/word@1" not in json.dumps(entries)
    assert json.loads(entries[-1]["detail"])["fields"] == [
        "location", "main_url", "password", "purpose", "site", "username"]


def test_a_url_shown_masked_and_sent_back_keeps_the_written_one(
    app: FastAPI, node: Node, config_file: Path
) -> None:
    text = CONFIG.replace("main_url: rtsp://127.0.0.1:1/hall", "main_url: rtsp://u:pw@127.0.0.1:1/hall")
    config_file.write_text(text)
    node.config = load_config(config_file)
    c = admin(app)
    hall = next(cam for cam in c.get("/api/system/cameras").json()["cameras"]
                if cam["name"] == "hall")
    assert hall["main_url"] == "rtsp://u:***@127.0.0.1:1/hall"
    r = c.put("/api/system/cameras/hall", json={
        **{k: hall[k] for k in ("site", "location", "main_url")}, "purpose": "corridor B"})
    assert r.status_code == 200, r.text
    assert yaml.safe_load(config_file.read_text())["cameras"]["hall"]["main_url"] == \
        "rtsp://u:pw@127.0.0.1:1/hall"


def test_disable_and_remove(app: FastAPI, node: Node, config_file: Path) -> None:
    c = admin(app)
    assert c.post("/api/system/cameras/hall/enabled", json={"enabled": False}).status_code == 200
    assert yaml.safe_load(config_file.read_text())["cameras"]["hall"]["enabled"] is False
    assert node.config.cameras["hall"].enabled is False
    assert c.post("/api/system/cameras/hall/enabled", json={"enabled": True}).status_code == 200
    assert "enabled" not in yaml.safe_load(config_file.read_text())["cameras"]["hall"]
    r = c.delete("/api/system/cameras/hall")
    assert r.status_code == 200, r.text
    assert "hall" not in yaml.safe_load(config_file.read_text())["cameras"]
    assert "hall" not in node.config.cameras
    assert c.delete("/api/system/cameras/hall").status_code == 404
    assert [e["target"] for e in audit_entries(node, Action.CAMERA_REMOVE)] == ["hall"]


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
def test_only_the_administrator_manages_cameras(app: FastAPI, node: Node, config_file: Path,
                                                role: Role) -> None:
    c = signed_in(app, add_user(app, "someone", role))
    assert c.post("/api/system/cameras", json=NEW).status_code == 403
    assert c.delete("/api/system/cameras/hall").status_code == 403
    assert c.get("/api/system/cameras").status_code == 403
    assert c.get("/cameras").status_code == 403
    assert config_file.read_text() == CONFIG


def test_an_administrator_limited_to_some_cameras_adds_none_and_edits_only_those(
    app: FastAPI, config_file: Path
) -> None:
    c = admin(app, cameras=["door"])
    assert c.post("/api/system/cameras", json=NEW).status_code == 403
    assert c.delete("/api/system/cameras/hall").status_code == 403
    assert [cam["name"] for cam in c.get("/api/system/cameras").json()["cameras"]] == ["door"]
    assert config_file.read_text() == CONFIG


def test_a_node_started_without_a_file_says_so(app: FastAPI, node: Node) -> None:
    node.config_path = None
    r = admin(app).post("/api/system/cameras", json=NEW)
    assert r.status_code == 409
    assert "configuration file" in r.json()["detail"]


def test_a_file_changed_meanwhile_is_not_overwritten(config_file: Path) -> None:
    def meanwhile(doc: Any) -> None:
        config_file.write_text(CONFIG + "\n# someone else\n")
        doc["cameras"]["hall"]["purpose"] = "mine"

    with pytest.raises(Exception, match="changed by someone else"):
        edit_config(config_file, meanwhile, env={"DOOR_PASSWORD": "x"})
    assert config_file.read_text().endswith("# someone else\n")


def test_the_stream_test_reads_the_stream_and_shows_a_redacted_picture(
    app: FastAPI, node: Node, sample_video: Path
) -> None:
    with SimServer() as sim:
        url = sim.add_camera("cam", sample_video, username="viewer", password="door-secret-1")
        c = admin(app)
        wrong = c.post("/api/system/cameras/test", json={"main_url": url, "username": "viewer",
                                                         "password": "wrong"})
        assert wrong.status_code == 422
        assert "wrong" not in wrong.text
        # The configured camera's password is used when none is sent, towards its own
        # address only: never to another host (an administrator's own server, say).
        node.config = parse_config(yaml.safe_dump({
            **yaml.safe_load(CONFIG.replace("${DOOR_PASSWORD}", "door-secret-1")
                             .replace("rtsp://127.0.0.1:1/door", url)),
            "storage": {"path": str(node.layout.root)}}))
        elsewhere = c.post("/api/system/cameras/test", json={
            "main_url": "rtsp://127.0.0.1:9/steal", "username": "viewer", "camera": "door"})
        assert elsewhere.status_code == 400
        assert "configured addresses" in elsewhere.json()["detail"]
        r = c.post("/api/system/cameras/test", json={"main_url": url, "username": "viewer",
                                                     "camera": "door"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["main"]["codec"] == "h264"
    assert (got["main"]["width"], got["main"]["height"]) == (320, 240)
    assert got["main"]["fps"] == pytest.approx(15, abs=0.5)
    assert got["redacted"] is True
    head, data = got["preview"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    assert picture.shape[:2] == (240, 320)
    tests = audit_entries(node, Action.CAMERA_TEST)
    assert [(e["target"], e["outcome"]) for e in tests] == [
        (url, "failed"), ("door", "ok")]
    assert "door-secret-1" not in json.dumps(tests)
    assert os.environ["DOOR_PASSWORD"] not in r.text


def test_cameras_are_found_and_read_over_onvif(app: FastAPI, node: Node) -> None:
    identity = OnvifIdentity(manufacturer="HIKVISION", model="DS-2CD2143G2-I",
                             firmware="V5.7.3 build 220112", serial="DS123")
    with OnvifSim() as onvif:
        device = onvif.add_device(identity, [
            SimProfile("Profile_1", "rtsp://127.0.0.1:1/main", "H264", 2688, 1520, 20),
            SimProfile("Profile_2", "rtsp://127.0.0.1:1/sub", "H264", 640, 360, 15)],
            username="installer", password="pw-1")
        assert onvif.discovery_port is not None
        c = admin(app)
        found = c.post("/api/system/cameras/discover", json={
            "hosts": ["127.0.0.1"], "multicast": False, "port": onvif.discovery_port,
            "timeout": 2})
        assert found.status_code == 200, found.text
        [seen] = found.json()["devices"]
        assert (seen["xaddrs"], seen["hardware"]) == ([device.url], identity.model)
        assert c.post("/api/system/cameras/discover", json={
            "hosts": ["not-an-ip"], "multicast": False}).status_code == 400
        assert c.post("/api/system/cameras/discover", json={"multicast": False}) \
            .status_code == 400
        read = c.post("/api/system/cameras/onvif", json={
            "url": device.url, "username": "installer", "password": "pw-1"})
    assert read.status_code == 200, read.text
    got = read.json()
    assert got["device"]["model"] == identity.model
    assert {s["role"]: s["uri"] for s in got["streams"]} == {
        "main": "rtsp://127.0.0.1:1/main", "sub": "rtsp://127.0.0.1:1/sub"}
    assert "pw-1" not in read.text
    assert [e["target"] for e in audit_entries(node, Action.CAMERA_DISCOVER)] == ["network"]
    [probed] = audit_entries(node, Action.CAMERA_TEST)
    assert "pw-1" not in probed["detail"]
    assert json.loads(probed["detail"])["device"][1] == identity.model


def test_a_camera_moved_to_another_host_needs_its_password_again(
    app: FastAPI, node: Node, config_file: Path
) -> None:
    """An administrator who never knew the stored password cannot have it sent elsewhere."""
    c = admin(app)
    form = {"site": "school", "location": "entrance", "purpose": "who enters the building",
            "username": "viewer"}
    r = c.put("/api/system/cameras/door", json={**form, "main_url": "rtsp://192.0.2.66/door"})
    assert r.status_code == 400
    assert "give its password again" in r.json()["detail"]
    assert config_file.read_text() == CONFIG
    r = c.put("/api/system/cameras/door", json={**form, "main_url": "rtsp://192.0.2.66/door",
                                                 "password": "typed-again"})
    assert r.status_code == 200, r.text
    # The same host with another path keeps the stored password.
    r = c.put("/api/system/cameras/door", json={**form, "main_url": "rtsp://192.0.2.66/door2"})
    assert r.status_code == 200, r.text
    assert yaml.safe_load(config_file.read_text())["cameras"]["door"]["password"] == "typed-again"
