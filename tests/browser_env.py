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
from typing import Any, Final
from urllib.parse import quote

import httpx
import yaml
from playwright.sync_api import Browser, Page, sync_playwright

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


# Two cameras configured but never started: for pages that need the node's users, cases and
# web server, not video.
IDLE_CAMERAS: Final[dict[str, dict[str, Any]]] = {
    name: {"location": location, "main_url": f"rtsp://127.0.0.1:1/{name}", "enabled": False}
    for name, location in (("cam01", "entrance"), ("cam02", "corridor"))
}


def node_config(folder: Path, name: str, cameras: dict[str, dict[str, Any]], *,
                profile: str | None = None, timezone: str | None = None) -> dict[str, Any]:
    """The config of a browser test's node: one site (``school``), ``cameras`` (name: its
    location, URL and other keys), storage under ``folder``, the web server on a free port of
    127.0.0.1. ``profile`` None is the default (the strictest); ``timezone`` None leaves the
    site's zone to the machine's."""
    return {
        "node": {"name": name, **({"timezone": timezone} if timezone else {})},
        **({"profile": profile} if profile else {}),
        "sites": {"school": {"name": "Test school"}},
        "cameras": {camera: {"site": "school", "purpose": "browser test", **keys}
                    for camera, keys in cameras.items()},
        "storage": {"path": str(folder / "var")},
        "server": {"host": "127.0.0.1", "port": 0},
    }


def serve_node(config: dict[str, Any], users: dict[str, Role],
               password: str = PASSWORD) -> Iterator[Recorder]:
    """The node of ``config`` started (recording what its cameras send, web server up), with
    ``users`` (name: role) added under ``password``; stopped after use."""
    node = Node(parse_config(yaml.safe_dump(config)))
    node.start()
    try:
        accounts = Users(node.store)
        for name, role in users.items():
            accounts.add(name, role, password)
        assert node.web is not None
        yield Recorder(node, node.web.url.rstrip("/"))
    finally:
        node.stop()


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
        cameras = {
            name: {"location": location, "main_url": url,
                   "record": {"segment_seconds": SEGMENT_SECONDS}, "analytics": {"width": 480}}
            for (name, url), location in zip(urls.items(), ("entrance", "corridor"), strict=True)
        }
        yield from serve_node(node_config(folder, "browser-test", cameras, timezone=timezone),
                              USERS)


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


def wait_until_running(node: Node, cameras: int, timeout: float = 90) -> None:
    """Until the node's live process is up and every camera is analysed: a node that has run
    for a while before anyone signs in, as a customer's has (its start is not measured)."""
    deadline = time.monotonic() + timeout
    while not (node.live.running and len(node.events.stats) == cameras):
        assert time.monotonic() < deadline, "the recorder did not start its parts"
        time.sleep(0.5)


def sign_in_to(browser: Browser, url: str, name: str, then: str) -> tuple[Page, float]:
    """A fresh 1400x900 page signed in as ``name``, sent on to ``then``; and the monotonic
    time of the sign-in click, for measuring what follows it."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(url + "/login?next=" + quote(then, safe=""))
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    clicked = time.monotonic()
    page.click("button[type=submit]")
    return page, clicked
