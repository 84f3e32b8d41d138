"""The README's demo command: simulator + recorder + status page, as a user starts it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.mark.slow
def test_demo_records_simulated_cameras_and_serves_status(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "demo", "--cameras", "2", "--data", str(tmp_path),
         "--port", "0", "--width", "320", "--height", "240", "--bitrate", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    try:
        url = password = None
        deadline = time.monotonic() + 120
        while password is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "demo exited before printing its address and the admin password"
            if m := re.search(r"web interface:\s+(http://127\.0\.0\.1:\d+/)", line):
                url = m.group(1)
            if m := re.search(r"sign in as 'admin' with the password (\S+)", line):
                password = m.group(1)
        assert url is not None
        assert password is not None
        client = httpx.Client(base_url=url)
        assert client.get("api/status").status_code == 401  # nothing without signing in
        signed_in = client.post("api/auth/login", json={"name": "admin", "password": password})
        assert signed_in.status_code == 200, signed_in.text
        # The printed password opens nothing until the administrator chooses their own.
        assert client.get("api/status").status_code == 403
        changed = client.post("api/auth/password", json={
            "old_password": password, "new_password": "demo-admin-password-1"},
            headers={"X-CSRF-Token": client.cookies["custodes_csrf"]})
        assert changed.status_code == 200, changed.text
        cameras: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cameras = client.get("api/status").json()["cameras"]
            if all(c["segments"] >= 1 for c in cameras):
                break
            time.sleep(1)
        page = client.get("").text
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert [c["name"] for c in cameras] == ["cam01", "cam02"]
    assert all(c["state"] == "online" for c in cameras)
    assert "custodes</title>" in page  # the live view, for the signed-in admin
    assert (tmp_path / "demo.yaml").is_file()
    assert len(list((tmp_path / "recordings").rglob("*.mp4"))) >= 2
