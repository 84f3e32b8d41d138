"""A camera added in a real browser (Debian's chromium, Playwright) to a running recorder:
tested (codec, size, a redacted picture), saved, written to the config file with its comments,
and recorded without a restart. Then disabled and removed, again without a restart.

Screenshots go to test-artifacts/screenshots/cameras-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select

from browser_env import CHROMIUM, PASSWORD, SCREENSHOTS, chromium_available, launch_chromium
from custodes.app import Node
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.config import load_config
from custodes.sim import SimServer, ensure_sample
from custodes.sim.digest import AuthScheme
from custodes.sim.onvif import OnvifIdentity, OnvifSim, SimProfile
from custodes.store import schema

pytestmark = pytest.mark.slow

CONFIG = """\
# Browser test node. This comment must survive the web UI's edits.
profile: school

node:
  name: cameras-browser-test   # shown in the header

sites:
  school:
    name: Test school

cameras:
  # Installed by hand, before the web UI existed.
  door:
    site: school
    location: entrance
    purpose: who enters the building
    main_url: {door}
    record:
      segment_seconds: 2
    analytics:
      enabled: false   # keeps the test light

storage:
  path: {storage}
server:
  host: 127.0.0.1
  port: 0
"""


def segments(node: Node, camera: str) -> int:
    seg = schema.segments
    with node.store.read() as conn:
        return int(conn.execute(select(func.count()).where(seg.c.camera == camera)).scalar_one())


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path, str]]:
    chromium_available()
    folder = tmp_path_factory.mktemp("cameras-browser")
    clip = ensure_sample(folder / "clips", width=480, height=270, fps=15, bitrate_kbps=300,
                         codec="h264", seconds=4)
    with SimServer() as sim:
        door = sim.add_camera("door", clip)
        # Not in the config yet: the administrator adds it in the browser, from what its
        # ONVIF service says; its streams want Digest, as Dahua and Hikvision do by default.
        stairs = sim.add_camera("stairs", clip, username="installer", password="s3cret:pw",
                                auth=AuthScheme.DIGEST)
        stairs_sub = sim.add_camera("stairs-sub", clip, username="installer",
                                    password="s3cret:pw", auth=AuthScheme.DIGEST)
        with OnvifSim(discovery_port=None) as onvif:
            device = onvif.add_device(
                OnvifIdentity(manufacturer="Dahua", model="IPC-HFW2531S-S-S2",
                              firmware="2.800.0000000.16.R", serial="7A0B1C2D"),
                [SimProfile("MediaProfile00000", stairs, "H264", 480, 270, 15),
                 SimProfile("MediaProfile00001", stairs_sub, "H264", 480, 270, 15)],
                username="installer", password="s3cret:pw")
            path = folder / "custodes.yaml"
            path.write_text(CONFIG.format(door=door, storage=folder / "var"))
            node = Node(load_config(path), config_path=path)
            node.start()
            try:
                Users(node.store).add("ada", Role.ADMIN, PASSWORD)
                assert node.web is not None
                yield node, path, device.url
            finally:
                node.stop()


@pytest.fixture(scope="module")
def browser(running: tuple[Node, Path, str]) -> Iterator[Browser]:
    assert CHROMIUM.is_file()
    yield from launch_chromium()


def sign_in(browser: Browser, node: Node) -> Page:
    assert node.web is not None
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(node.web.url.rstrip("/") + "/login?next=/cameras")
    page.fill("#name", "ada")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/cameras"))
    return page


def test_a_camera_added_in_the_browser_records_without_a_restart(
    browser: Browser, running: tuple[Node, Path, str]
) -> None:
    node, path, onvif_url = running
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    started = node.started_at
    page = sign_in(browser, node)
    expect(page.locator("tr[data-camera=door]")).to_be_visible()
    page.click("#add")
    page.fill("#c-name", "stairs")
    page.select_option("#c-location", "corridor")
    # The school profile's placement rules are on the form already.
    assert page.locator("#c-location option[value=classroom]").is_disabled()
    page.fill("#c-purpose", "the stairs to the first floor")
    page.fill("#c-user", "installer")
    page.fill("#c-password", "s3cret:pw")
    # The camera's ONVIF service fills in its streams and says what it is.
    page.fill("#c-onvif", onvif_url)
    page.click("#onvif-read")
    expect(page.locator("#c-device-info")).to_contain_text("Dahua IPC-HFW2531S-S-S2",
                                                            timeout=60_000)
    assert page.input_value("#c-main").endswith("/stream")
    assert page.input_value("#c-sub") != ""
    page.click("#test")
    expect(page.locator("[data-stream=main]")).to_contain_text("h264 480\u00d7270", timeout=60_000)
    expect(page.locator("[data-stream=sub]")).to_contain_text("h264 480\u00d7270")
    expect(page.locator("#preview")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "cameras-1-tested.png")
    page.click("#save")
    expect(page.locator("tr[data-camera=stairs]")).to_be_visible(timeout=60_000)
    # Recording without a restart: segments of the new camera are indexed.
    deadline = time.monotonic() + 120
    while segments(node, "stairs") < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert segments(node, "stairs") >= 2
    assert node.started_at == started
    expect(page.locator("tr[data-camera=stairs] .badge")).to_have_text("online", timeout=30_000)
    page.screenshot(path=SCREENSHOTS / "cameras-2-recording.png")
    text = path.read_text()
    assert "# Browser test node. This comment must survive the web UI's edits." in text
    assert "# Installed by hand, before the web UI existed." in text
    assert "enabled: false   # keeps the test light" in text
    saved = yaml.safe_load(text)["cameras"]["stairs"]
    assert saved["password"] == "s3cret:pw"
    assert saved["onvif_url"] == onvif_url
    assert saved["sub_url"] != saved["main_url"]
    assert "s3cret" not in page.content()
    # The analysis pool took the new camera in (it analyses by default).
    assert "stairs" in node.analytics.health


def test_a_camera_disabled_and_removed_in_the_browser_stops_recording(
    browser: Browser, running: tuple[Node, Path, str]
) -> None:
    node, path, _ = running
    page = sign_in(browser, node)
    row = page.locator("tr[data-camera=stairs]")
    expect(row).to_be_visible()
    row.locator("button.toggle").click()
    expect(row.locator(".badge")).to_have_text("disabled", timeout=30_000)
    assert "stairs" not in node.supervisors
    page.on("dialog", lambda d: d.accept())
    row.locator("button.remove").click()
    expect(row).to_have_count(0, timeout=30_000)
    assert "stairs" not in yaml.safe_load(path.read_text())["cameras"]
    assert "door" in node.supervisors


def test_an_edit_restarts_a_recorder_only_when_its_stream_changes(
    browser: Browser, running: tuple[Node, Path, str]
) -> None:
    node, path, _ = running
    page = sign_in(browser, node)
    expect(page.locator("tr[data-camera=door]")).to_be_visible()
    recorder = node.supervisors["door"]
    door = yaml.safe_load(path.read_text())["cameras"]["door"]
    form = {k: door[k] for k in ("site", "location", "main_url")}

    def put(body: dict[str, object]) -> dict[str, object]:
        answer: dict[str, object] = page.evaluate(
            "body => custodes.api('PUT', '/api/system/cameras/door', body)", body)
        return answer

    done = put({**form, "purpose": "who enters and leaves the building"})
    assert done["applied"] == {"started": [], "stopped": [], "restarted": [],
                               "analytics_rebuilt": False, "live_rebuilt": False}
    assert node.supervisors["door"] is recorder
    before = segments(node, "door")
    # Same host, another path: a new stream, so the recorder restarts on it.
    moved = str(door["main_url"]).replace("/stream", "/stream?again=1")
    done = put({**form, "main_url": moved, "purpose": "who enters and leaves the building"})
    assert done["applied"]["restarted"] == ["door"]  # type: ignore[index]
    assert node.supervisors["door"] is not recorder
    deadline = time.monotonic() + 120
    while segments(node, "door") < before + 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert segments(node, "door") >= before + 2
    assert "# Installed by hand, before the web UI existed." in path.read_text()
