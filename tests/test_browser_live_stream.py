"""The live grid by stream copy in a real browser (Debian's chromium under Playwright): eight
simulated cameras (main and sub stream each) recording and analysed, and an operator (a role
allowed originals) watching all eight; every tile plays the camera's own video through Media
Source Extensions.

Measured and printed (run with -s), with the load average:
- the time from the sign-in click to every tile playing (a frame on screen);
- per tile, the age of the frame on screen: the browser's display time of each frame
  (requestVideoFrameCallback) minus its capture time, estimated on the server as the arrival
  time of the least delayed fragment of its stream (custodes.live.stream): so what it measures
  is everything from the recorder's socket to the screen (remux, fan-out, WebSocket, MSE
  buffering, decode), not the camera's encoder, which no stream copy can see. Browser and
  server are one machine here, so their clocks agree;
- the CPU of the stream-copy ffmpeg processes.
Nothing timed is asserted (the box is shared). Asserted: every tile plays, says it shows the
original, the single view plays the main stream and zooms, and fullscreen works.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from playwright.sync_api import Browser

from browser_env import (
    PASSWORD,
    SCREENSHOTS,
    chromium_available,
    launch_chromium,
    sign_in_to,
    wait_until_running,
)
from custodes.app import Node
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.config import parse_config
from custodes.sim import SimServer, ensure_sample, prepare_clip

pytestmark = pytest.mark.slow

CAMERAS = [f"cam{i:02d}" for i in range(1, 9)]
OPERATOR = "otto"  # Role.OPERATOR: may see originals
VIEWER = "vera"  # Role.VIEWER: redacted pictures only
SAMPLE_SECONDS = 20.0
MAIN = (960, 540)
SUB = (480, 270)
SHOTS = SCREENSHOTS.parent / "live-stream"


@dataclass
class Eight:
    node: Node
    url: str


@pytest.fixture(scope="module")
def eight(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Eight]:
    chromium_available()
    folder = tmp_path_factory.mktemp("live8")
    hamilton = shared_data / "video/face_recognition_short_hamilton_clip.mp4"
    people = {size: prepare_clip(hamilton, folder / "clips", width=size[0], height=size[1],
                                 bitrate_kbps=1500 if size == MAIN else 500)
              for size in (MAIN, SUB)}
    pattern = {size: ensure_sample(folder / "clips", width=size[0], height=size[1], fps=15,
                                   bitrate_kbps=1000 if size == MAIN else 300, codec="h264",
                                   seconds=4)
               for size in (MAIN, SUB)}
    with SimServer() as sim:
        # Odd cameras show people (faces for analysis to find), even ones the test pattern.
        clips = [people if i % 2 == 0 else pattern for i in range(len(CAMERAS))]
        cameras = {
            name: {"site": "school", "location": "corridor", "purpose": "live stream test",
                   "main_url": sim.add_camera(f"{name}-main", clip[MAIN]),
                   "sub_url": sim.add_camera(f"{name}-sub", clip[SUB]),
                   "record": {"segment_seconds": 2}, "analytics": {"width": 480}}
            for name, clip in zip(CAMERAS, clips, strict=True)
        }
        config = parse_config(yaml.safe_dump({
            "node": {"name": "live-stream-test"},
            "sites": {"school": {"name": "Test school"}},
            "cameras": cameras,
            "storage": {"path": str(folder / "var")},
            "server": {"host": "127.0.0.1", "port": 0},
        }))
        node = Node(config)
        users = Users(node.store)
        node.start()
        try:
            users.add(OPERATOR, Role.OPERATOR, PASSWORD)
            users.add(VIEWER, Role.VIEWER, PASSWORD)
            assert node.web is not None
            yield Eight(node, node.web.url.rstrip("/"))
        finally:
            node.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_available()
    yield from launch_chromium()


TILES_JS = """() => [...document.querySelectorAll('.tile[data-camera]')].map(t => {
  const v = t.querySelector('video');
  return {camera: t.dataset.camera, shows: t.dataset.shows, state: t.dataset.state,
          says: t.querySelector('.state').textContent,
          frames: Number(v?.dataset.frames || 0), latency: Number(v?.dataset.latency ?? NaN),
          buffer: Number(v?.dataset.buffer ?? NaN),
          width: v?.videoWidth || 0, height: v?.videoHeight || 0};
})"""


def load() -> str:
    one, five, fifteen = psutil.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {psutil.cpu_count()} cores"


def copy_cpu() -> float:
    """CPU seconds so far of the stream-copy ffmpeg processes (children of this process)."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "frag_every_frame+empty_moov+default_base_moof" in proc.cmdline():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_eight_tiles_play_the_cameras_own_video(browser: Browser, eight: Eight) -> None:
    node = eight.node
    wait_until_running(node, len(CAMERAS))
    time.sleep(5)  # recording and analysis settle, as on a node that has run for a while
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, clicked = sign_in_to(browser, eight.url, OPERATOR, "/?layout=9")
    page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('.tile[data-camera] video')];"
        f" return v.length === {len(CAMERAS)} && v.every(e => Number(e.dataset.frames) >= 1); }}",
        timeout=120_000)
    all_playing = time.monotonic() - clicked
    print(f"\nsign-in to all {len(CAMERAS)} tiles playing video: {all_playing:.2f} s ({load()})")

    cpu_before, started = copy_cpu(), time.monotonic()
    first = {t["camera"]: t for t in page.evaluate(TILES_JS)}
    ages: dict[str, list[float]] = {c: [] for c in CAMERAS}
    buffered: list[float] = []  # of the age: what the player holds ahead of the frame shown
    while time.monotonic() - started < SAMPLE_SECONDS:
        for tile in page.evaluate(TILES_JS):
            if tile["latency"] == tile["latency"]:  # not NaN
                ages[tile["camera"]].append(tile["latency"])
            if tile["buffer"] == tile["buffer"]:
                buffered.append(tile["buffer"])
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    copying = (copy_cpu() - cpu_before) / elapsed
    last = {t["camera"]: t for t in page.evaluate(TILES_JS)}
    page.screenshot(path=SHOTS / "eight-tiles.png")
    print(f"age of the frame on screen over {elapsed:.0f} s, sampled every 0.25 s ({load()}):")
    every: list[float] = []
    for name in CAMERAS:
        fps = (last[name]["frames"] - first[name]["frames"]) / elapsed
        every += ages[name]
        print(f"  {name}: p50 {1000 * statistics.median(ages[name]):.0f} ms, "
              f"p90 {1000 * percentile(ages[name], 0.9):.0f} ms, {fps:.1f} frames/s shown, "
              f"{last[name]['width']}x{last[name]['height']}")
    print(f"  all tiles: p50 {1000 * statistics.median(every):.0f} ms, "
          f"p90 {1000 * percentile(every, 0.9):.0f} ms, max {1000 * max(every):.0f} ms; "
          "the player's buffer (newest frame's end minus the one shown): "
          f"p50 {1000 * statistics.median(buffered):.0f} ms")
    print(f"CPU of the {len(node.live_streams.upstreams)} stream copies: "
          f"{100 * copying:.1f}% of a core in all ({load()})")
    for name in CAMERAS:
        tile = last[name]
        assert tile["shows"] == "original", name
        assert tile["state"] == "live", f"{name}: {tile['says']}"
        assert tile["frames"] > first[name]["frames"], f"{name}: no new frame in {elapsed:.0f} s"
        assert (tile["width"], tile["height"]) == SUB, name  # the grid plays the sub stream
        assert ages[name], f"{name}: no frame age measured"

    # -- single view: the main stream, digital zoom, fullscreen ---------------------------
    page.click('.tile[data-camera="cam01"]')
    page.wait_for_function(
        "() => { const v = document.querySelector('.grid.n1 .tile[data-camera] video');"
        f" return v && v.videoWidth === {MAIN[0]} && Number(v.dataset.frames) >= 3; }}",
        timeout=60_000)
    single = page.locator(".tile[data-camera]")
    box = single.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6)
    page.mouse.wheel(0, -600)
    zoom = float(single.get_attribute("data-zoom") or "1")
    assert zoom > 2, zoom
    transform = page.evaluate("() => document.querySelector('.tile video').style.transform")
    assert "scale(" in transform
    page.screenshot(path=SHOTS / "single-zoomed.png")
    page.click(".tile .full")
    page.wait_for_function("() => document.fullscreenElement?.classList.contains('tile')",
                           timeout=10_000)
    page.evaluate("() => document.exitFullscreen()")
    print(f"single view: main stream {MAIN[0]}x{MAIN[1]} playing, zoomed {zoom:.1f}x, "
          "fullscreen entered and left")
    page.context.close()


# A page script of the viewer's own session trying the original video anyway.
TRY_ORIGINAL_JS = """() => new Promise((resolve) => {
  const ws = new WebSocket(`ws://${location.host}/api/cameras/cam01/live/stream?stream=main`);
  ws.binaryType = "arraybuffer";
  let got = 0;
  ws.onopen = () => ws.send(JSON.stringify({ csrf: custodes.cookie("custodes_csrf") }));
  ws.onmessage = (e) => { if (typeof e.data !== "string") got += 1; };
  ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, binary: got });
})"""


def test_a_redacted_only_role_gets_pictures_and_never_video(browser: Browser,
                                                             eight: Eight) -> None:
    page, _ = sign_in_to(browser, eight.url, VIEWER, "/?layout=9")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile[data-camera] img')]"
        ".some(i => Number(i.dataset.frames) >= 1)", timeout=120_000)
    tiles = page.evaluate(TILES_JS)
    assert len(tiles) == len(CAMERAS)
    assert {t["shows"] for t in tiles} == {"redacted"}
    assert page.locator(".tile video").count() == 0
    assert page.locator(".tile .shows").first.inner_text() == "redacted picture"
    tried = page.evaluate(TRY_ORIGINAL_JS)
    print(f"\na viewer's own page opening the original video: closed {tried['code']} "
          f"{tried['reason']!r}, {tried['binary']} binary messages")
    assert tried["code"] == 4403
    assert tried["binary"] == 0
    page.context.close()


def test_a_browser_without_the_cameras_codec_gets_redacted_pictures(
        browser: Browser, tmp_path: Path) -> None:
    """An H.265 camera: Debian's chromium plays no H.265 through MSE, so the operator's tile
    falls back to the redacted pictures and says why."""
    clip = ensure_sample(tmp_path / "clips", width=480, height=270, fps=15, bitrate_kbps=300,
                         codec="h265", seconds=4)
    with SimServer() as sim:
        config = parse_config(yaml.safe_dump({
            "node": {"name": "h265-test"},
            "sites": {"school": {"name": "Test school"}},
            "cameras": {"cam01": {"site": "school", "location": "corridor",
                                  "purpose": "h265 test", "main_url": sim.add_camera("c", clip),
                                  "record": {"mode": "off"},
                                  "analytics": {"enabled": False}}},
            "storage": {"path": str(tmp_path / "var")},
            "server": {"host": "127.0.0.1", "port": 0},
        }))
        node = Node(config)
        node.start()
        try:
            Users(node.store).add(OPERATOR, Role.OPERATOR, PASSWORD)
            assert node.web is not None
            page, _ = sign_in_to(browser, node.web.url.rstrip("/"), OPERATOR, "/")
            page.wait_for_function(
                "() => Number(document.querySelector('.tile[data-camera] img')?.dataset.frames)"
                " >= 1", timeout=120_000)
            tile = page.locator(".tile[data-camera]")
            assert tile.get_attribute("data-shows") == "redacted"
            assert page.locator(".tile video").count() == 0
            why = page.locator(".tile .shows").get_attribute("title") or ""
            print(f"\nH.265 camera for an operator: {why!r}")
            assert why.startswith("this browser cannot play video/mp4; codecs=\"hev1.")
            page.context.close()
        finally:
            node.stop()
