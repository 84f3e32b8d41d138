"""Issue 11, the demo: your own clip as a camera, the municipal profile storing descriptors, and
the README's case walkthrough run as a user would (the demo, the CLI, the API), from the first
administrator's sign-in to a signed export checked with openssl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
import pytest
import yaml

from custodes.commands.demo import case_steps, demo_config, subject_photo
from custodes.config import parse_config
from custodes.privacy.policy import Profile

CLIP = "video/face_recognition_short_hamilton_clip.mp4"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_demo_config_stores_descriptors_only_where_the_profile_allows() -> None:
    from custodes.commands.demo import DemoCamera  # noqa: PLC0415

    cams = [DemoCamera("cam01", "rtsp://127.0.0.1:1/cam01", "Demonstration: your clip a.mp4",
                       Path("a.mp4"))]
    municipal = parse_config(yaml.safe_dump(demo_config(cams, 0, Profile.MUNICIPAL)))
    assert municipal.cameras["cam01"].analytics.faces.embeddings
    school = parse_config(yaml.safe_dump(demo_config(cams, 0, Profile.SCHOOL)))
    assert not school.cameras["cam01"].analytics.faces.embeddings
    assert "identifies nobody" in case_steps(Path("d.yaml"), Profile.SCHOOL, "cam01", None)[0]
    steps = "\n".join(case_steps(Path("d.yaml"), Profile.MUNICIPAL, "cam01", Path("s.jpg")))
    assert "custodes case open -c d.yaml --user ivan" in steps
    assert "--photo s.jpg" in steps


def test_the_subject_photo_holds_one_describable_face(shared_data: Path, tmp_path: Path) -> None:
    from custodes.faces.photos import describe_photo, read_image  # noqa: PLC0415

    photo = subject_photo(shared_data / CLIP, tmp_path / "subject.jpg")
    assert photo is not None
    described = describe_photo(read_image(photo.read_bytes()))  # PhotoError unless one face
    assert min(described.box.w, described.box.h) >= 40


def test_a_command_beside_the_node_leaves_its_database_log_alone(tmp_path: Path) -> None:
    """The walkthrough runs commands beside the running node. Signing a checkpoint once
    closed a descriptor of the database file, which dropped the node's SQLite locks: the next
    command deleted the WAL under the node ("disk I/O error" on every query after)."""
    from custodes.audit.actions import Action  # noqa: PLC0415
    from custodes.audit.log import SYSTEM, AuditLog  # noqa: PLC0415
    from custodes.keys import NodeKeys  # noqa: PLC0415
    from custodes.store.db import Store  # noqa: PLC0415

    path = tmp_path / "custodes.db"
    with Store(path) as store:
        audit = AuditLog(store, NodeKeys.load_or_create(tmp_path / "keys"), checkpoint_every=1)
        with store.read() as held:  # the node's connection, open throughout
            held.exec_driver_sql("SELECT count(*) FROM audit_log").fetchall()
            audit.record(SYSTEM, Action.NODE_START, "node")  # signs: checkpoint_every=1
            # Another process opens and closes the database, as `custodes user add` does.
            subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect("
                            "sys.argv[1]); c.execute('PRAGMA journal_mode=WAL'); "
                            "c.execute('SELECT 1').fetchall(); c.close()", str(path)],
                           check=True, timeout=60)
            assert (tmp_path / "custodes.db-wal").exists()
            held.exec_driver_sql("SELECT count(*) FROM audit_log").fetchall()
        assert audit.record(SYSTEM, Action.NODE_STOP, "node") == 2


def _cli(*args: str, password: str | None = None) -> str:
    env = {**os.environ, "CUSTODES_PASSWORD": password} if password else dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "custodes", *args], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, f"custodes {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _read_until(stream: IO[str], pattern: str, seen: list[str], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        assert line, "the demo exited early:\n" + "".join(seen)
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no {pattern!r} in the demo's output:\n" + "".join(seen))


def _sign_in(url: str, name: str, password: str, new_password: str) -> httpx.Client:
    """Sign in as a new user does: the password someone else chose is replaced first."""
    c = httpx.Client(base_url=url, timeout=60)
    r = c.post("api/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = c.cookies["custodes_csrf"]
    r = c.post("api/auth/password", json={"old_password": password,
                                         "new_password": new_password})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = c.cookies["custodes_csrf"]
    return c


@pytest.mark.slow
def test_a_case_end_to_end_on_your_own_clip(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / CLIP
    data = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "demo", "--profile", "municipal", "--video",
         str(clip), "--data", str(data), "--port", "0", "--width", "640", "--height", "360",
         "--bitrate", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        url = _read_until(proc.stdout, r"web interface:\s+(http://127\.0\.0\.1:\d+/)", seen,
                          300).group(1)
        admin_password = _read_until(proc.stdout, r"with the password (\S+)", seen, 60).group(1)
        photo = Path(_read_until(proc.stdout, r"--photo (\S+\.jpg)", seen, 120).group(1))
        assert photo.is_file()
        config = data / "demo.yaml"
        assert "your clip face_recognition_short_hamilton_clip.mp4" in config.read_text()
        c = ["-c", str(config)]

        # 1. Two accounts, each confirmed by a second administrator (the web admin).
        asked = _cli("user", "add", "ivan", "--role", "investigator", *c)
        asked += _cli("user", "add", "dora", "--role", "approver", *c)
        grants = [int(g) for g in re.findall(r"grant (\d+):", asked)]
        assert len(grants) == 2, asked
        admin = _sign_in(url, "admin", admin_password, "demo-admin-password-1")
        passwords = {}
        for grant in grants:
            r = admin.post(f"api/grants/{grant}/confirm")
            assert r.status_code == 200, r.text
            passwords[r.json()["grant"]["user"]] = r.json()["password"]
        for name in ("ivan", "dora"):
            _sign_in(url, name, passwords[name], f"demo-{name}-password-1").close()
        ivan, dora = "demo-ivan-password-1", "demo-dora-password-1"

        # 2-3. Opened by the investigator, approved by the approver.
        now = time.time()
        opened = _cli("case", "open", *c, "--user", "ivan", "--reference", "DEMO-1",
                      "--legal-basis", "demonstration", "--purpose", "find the person",
                      "--camera", "cam01", "--from", iso(now - 600), "--to", iso(now + 900),
                      "--expires", iso(now + 7 * 86400), "--photo", str(photo), password=ivan)
        assert "case 1 opened" in opened
        assert "approved" in _cli("case", "approve", *c, "--user", "dora", "1", password=dora)

        # 4. The search finds the person once the clip's faces are analysed.
        deadline, found = time.monotonic() + 420, ""
        while time.monotonic() < deadline:
            found = _cli("case", "search", *c, "--user", "ivan", "1", password=ivan)
            if not re.search(r"^0 hits", found, re.MULTILINE):
                break
            time.sleep(10)
        hits = re.search(r"^(\d+) hits in cam01", found, re.MULTILINE)
        assert hits is not None, found
        assert int(hits.group(1)) >= 1, found
        assert re.search(r"[1-9]\d* of \d+ face tracks searchable", found), found

        # 5. The export of the case, redacted, verifies with plain openssl.
        end = time.time() - 4
        out = tmp_path / "demo-export"
        _cli("export", "create", *c, "--camera", "cam01", "--from", iso(end - 8), "--to",
             iso(end), "--case", "1", "--allow-gaps", str(out))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["case"] == "1"
        openssl = shutil.which("openssl")
        if openssl is not None:
            ok = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey",
                                 "signing.pub", "-rawin", "-in", "manifest.json", "-sigfile",
                                 "manifest.sig"], cwd=out, capture_output=True, text=True,
                                check=False)
            assert "Signature Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
        admin.close()
    except Exception as exc:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        raise AssertionError(f"{exc!r}\n--- the demo said:\n{''.join(seen)}{rest}") from None
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + rest
