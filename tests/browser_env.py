"""A real recorder for the browser tests: simulated cameras over RTSP, recording, analysis,
the web server on 127.0.0.1 (a free port), users of several roles, and Debian's chromium.

cam01 shows real people walking (from the shared test data), so that its live pictures and
events have faces to blur; cam02 the generated test pattern.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.sync_api import Browser, sync_playwright

from conftest import require
from custodes.app import Node
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.config import parse_config
from custodes.sim import SimServer, ensure_sample, prepare_clip

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "browser-test-password"
SEGMENT_SECONDS = 2
USERS = {  # name: role
    "olga": Role.OPERATOR, "viktor": Role.VIEWER, "ines": Role.INSPECTOR,
    "ivan": Role.INVESTIGATOR,
}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


@dataclass
class Recorder:
    node: Node
    url: str  # http://127.0.0.1:<port>  (no trailing slash)

    def segments(self, camera: str) -> int:
        with httpx.Client(base_url=self.url) as c:
            c.post("/api/auth/login", json={"name": "olga", "password": PASSWORD})
            r = c.get(f"/api/cameras/{camera}/timeline",
                      params={"start": time.time() - 3600, "end": time.time()})
            r.raise_for_status()
            spans: list[dict[str, Any]] = r.json()["coverage"]
            return int(sum(s["end"] - s["start"] for s in spans) // SEGMENT_SECONDS)

    def wait_for_footage(self, seconds: float, timeout: float = 120) -> None:
        """Until every camera has ``seconds`` of indexed recording."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.segments(c) * SEGMENT_SECONDS >= seconds for c in ("cam01", "cam02")):
                return
            time.sleep(1)
        raise AssertionError(f"the cameras did not record {seconds} s in {timeout} s")


def chromium_available() -> None:
    require(CHROMIUM.is_file(), "Debian's chromium at /usr/bin/chromium")


def start_recorder(shared_data: Path, folder: Path, *,
                   timezone: str | None = None) -> Iterator[Recorder]:
    """``timezone``: the site's (node.timezone); None leaves it to the machine's."""
    people = prepare_clip(shared_data / "video/face_recognition_short_hamilton_clip.mp4",
                          folder / "clips", width=480, height=270, bitrate_kbps=500)
    pattern = ensure_sample(folder / "clips", width=480, height=270, fps=15, bitrate_kbps=300,
                            codec="h264", seconds=4)
    with SimServer() as sim:
        urls = {"cam01": sim.add_camera("cam01", people),
                "cam02": sim.add_camera("cam02", pattern)}
        config = parse_config(yaml.safe_dump({
            "node": {"name": "browser-test", **({"timezone": timezone} if timezone else {})},
            "sites": {"school": {"name": "Test school"}},
            "cameras": {
                name: {
                    "site": "school", "location": location, "purpose": "browser test",
                    "main_url": url,
                    "record": {"segment_seconds": SEGMENT_SECONDS},
                    "analytics": {"width": 480},
                }
                for (name, url), location in zip(urls.items(), ("entrance", "corridor"),
                                                 strict=True)
            },
            "storage": {"path": str(folder / "var")},
            "server": {"host": "127.0.0.1", "port": 0},
        }))
        node = Node(config)
        users = Users(node.store)
        node.start()
        try:
            for name, role in USERS.items():
                users.add(name, role, PASSWORD)
            assert node.web is not None
            yield Recorder(node, node.web.url.rstrip("/"))
        finally:
            node.stop()


def fresh_screenshots() -> Path:
    if SCREENSHOTS.is_dir():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


def launch_chromium() -> Iterator[Browser]:
    """Debian's headless Chromium under Playwright, closed after use (a module's fixture)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
