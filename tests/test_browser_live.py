"""The live grid of nine cameras in a real browser (Debian's chromium, driven by Playwright)
against a real recorder: nine simulated cameras recording and analysed, and a viewer (a role
that may see redacted video only) watching all nine at once.

Measured here and printed (run with -s to see), with the load average: the time from the
sign-in click to every tile showing a picture; per tile, the picture's age on screen (now
minus its capture time, sampled every 0.25 s for SAMPLE_SECONDS) as p50 and p90, and the
pictures a second; the CPU of the live picture process per watched tile. Nothing timed is
asserted: the test box is shared, and busier than a customer's would be. Asserted: every tile
shows moving, redacted pictures and says its state, also when its camera goes down and when
the viewer loses the right to watch it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import psutil
import pytest
import yaml
from playwright.sync_api import Browser, Page

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
from custodes.redaction.live import read_state
from custodes.sim import SimServer, ensure_sample, prepare_clip
from custodes.vision.decode import file_frames
from custodes.vision.faces import Box, FaceDetector

pytestmark = pytest.mark.slow

CAMERAS = [f"cam{i:02d}" for i in range(1, 10)]
VIEWER = "vera"  # Role.VIEWER: live view and redacted playback only
SAMPLE_SECONDS = 24.0
# Judging a served picture against the camera's own frame (the simulator plays a known clip):
# each face the detector finds in the ORIGINAL frame (at the analysis cut, above redaction's)
# must have lost its detail in the picture shown. A face is taken as shown unblurred when the
# picture keeps at least LEAK_KEPT of the original's detail (Laplacian variance) in the face's
# centre (eyes, nose, mouth: the box shrunk by LEAK_CENTRE a side), for faces with at least
# LEAK_DETAIL of it (a flat, dark face has nothing to lose). JPEG keeps ~0.7-1.0 of it,
# the blur ~0.1. Judged on the redacted picture alone (a detector and a detail cut), a hand
# found as a face next to a blurred one, or a blurred face crossed by the hard edge of another
# blur, passed for leaks: this judge cannot be fooled by what the redaction itself drew.
LEAK_DETAIL = 20.0
LEAK_KEPT = 0.5
LEAK_CENTRE = 0.3
MATCH_MAX = 12.0  # median abs difference of a picture's thumbnail to its clip frame's (~1
# typically, 6-7 when a held box from a close-up blurs half the picture)
# Beside test_browser.py's screenshots, which that module wipes when it starts.
SHOTS = SCREENSHOTS.parent / "live-grid"


@dataclass
class Nine:
    node: Node
    people: Path
    url: str
    sim: SimServer
    users: Users


@pytest.fixture(scope="module")
def nine(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nine]:
    chromium_available()
    folder = tmp_path_factory.mktemp("live9")
    people = prepare_clip(shared_data / "video/face_recognition_short_hamilton_clip.mp4",
                          folder / "clips", width=480, height=270, bitrate_kbps=500)
    pattern = ensure_sample(folder / "clips", width=480, height=270, fps=15, bitrate_kbps=300,
                            codec="h264", seconds=4)
    with SimServer() as sim:
        # Odd cameras show people (faces to blur), even ones the moving test pattern.
        urls = {name: sim.add_camera(name, people if i % 2 == 0 else pattern)
                for i, name in enumerate(CAMERAS)}
        config = parse_config(yaml.safe_dump({
            "node": {"name": "live-grid-test"},
            "sites": {"school": {"name": "Test school"}},
            "cameras": {
                name: {"site": "school", "location": "corridor", "purpose": "live grid test",
                       "main_url": url, "record": {"segment_seconds": 2},
                       "analytics": {"width": 480}}
                for name, url in urls.items()
            },
            "storage": {"path": str(folder / "var")},
            "server": {"host": "127.0.0.1", "port": 0},
        }))
        node = Node(config)
        users = Users(node.store)
        node.start()
        try:
            users.add(VIEWER, Role.VIEWER, PASSWORD)
            assert node.web is not None
            yield Nine(node, people, node.web.url.rstrip("/"), sim, users)
        finally:
            node.stop()


@pytest.fixture(scope="module")
def browser(nine: Nine) -> Iterator[Browser]:
    yield from launch_chromium()


TILES_JS = """() => ({
  now: Date.now() / 1000,
  tiles: [...document.querySelectorAll('.tile[data-camera]')].map(t => {
    const img = t.querySelector('img');
    return {camera: t.dataset.camera, capture: Number(img.dataset.capture || 0),
            frames: Number(img.dataset.frames || 0), state: t.dataset.state,
            says: t.querySelector('.state').textContent};
  }),
})"""


# The JPEG a tile shows now (its blob, as the server sent it), and its capture time.
SHOWN_JS = """async (camera) => {
  const img = document.querySelector(`.tile[data-camera="${camera}"] img`);
  for (let tries = 1; ; tries++) {
    const capture = Number(img.dataset.capture);
    try {
      const data = await (await fetch(img.src)).arrayBuffer();
      return {capture, jpeg: Array.from(new Uint8Array(data))};
    } catch (err) {  // replaced (and its blob released) while we fetched it: the next one
      if (tries === 3) throw err;
    }
  }
}"""


def load() -> str:
    one, five, fifteen = psutil.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {psutil.cpu_count()} cores"


def cpu_by_part(node: Node) -> dict[str, float]:
    """CPU seconds so far of this test's processes, by what they are: the live picture
    process, analysis, recording (ffmpeg), the browser, and this process (the node's web
    server and maintainers, the simulated cameras, the test itself)."""
    me = psutil.Process()
    parts = {"live": 0.0, "analysis": 0.0, "recording": 0.0, "browser": 0.0, "node+sim": 0.0}
    analysis = set(node.analytics.pids())
    for proc in [me, *me.children(recursive=True)]:
        try:
            times, name = proc.cpu_times(), proc.name()
        except psutil.NoSuchProcess:
            continue
        part = ("live" if proc.pid == node.live.pid else "analysis" if proc.pid in analysis
                else "recording" if name.startswith("ffmpeg")
                else "browser" if "chrom" in name or "headless" in name or name == "node"
                else "node+sim" if proc.pid == me.pid else None)
        if part is not None:
            parts[part] += times.user + times.system
    return parts


class Truth:
    """The people clip's frames as the live picture service decodes them, at each width a
    picture comes in, and the faces in each: what a served picture is judged against."""

    def __init__(self, clip: Path, detector: FaceDetector) -> None:
        self.clip = clip
        self.detector = detector
        self._frames: dict[int, list[npt.NDArray[np.int16]]] = {}
        self._faces: dict[tuple[int, int], list[Box]] = {}

    def frames(self, width: int) -> list[npt.NDArray[np.int16]]:
        if width not in self._frames:
            self._frames[width] = [frame.rgb().astype(np.int16)
                                   for frame in file_frames(self.clip, 15, width)]
        return self._frames[width]

    def original(self, shown: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """The clip frame a picture was made from: the nearest by thumbnails (a blur keeps a
        picture's coarse content, so a picture much of which is blurred still matches), then
        of the three nearest the one with the least median difference."""
        frames = self.frames(shown.shape[1])
        thumb = _thumbnail(shown)
        # The median: where a blur covers much of the picture, the rest still matches.
        coarse = [float(np.median(np.abs(thumb - _thumbnail(f)))) if f.shape == shown.shape
                  else float("inf") for f in frames]
        nearest = sorted(range(len(frames)), key=coarse.__getitem__)[:3]
        best = min(nearest, key=lambda i: float(np.median(np.abs(shown - frames[i]))))
        assert coarse[best] <= MATCH_MAX, f"a picture unlike any frame of the clip: " \
            f"{coarse[best]:.1f}"
        return frames[best]

    def unblurred(self, jpeg: bytes) -> list[tuple[Box, float]]:
        """Faces of the original frame whose detail survived in the picture: each with the
        share of its detail kept."""
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        shown = np.ascontiguousarray(image[:, :, ::-1]).astype(np.int16)
        original = self.original(shown)
        out = []
        for face in self.detector.detect(original.astype(np.uint8)):
            box = face.box.expand(-LEAK_CENTRE).clip(shown.shape[1], shown.shape[0])
            if box.w <= 2 or box.h <= 2:
                continue
            before = detail(original, box)
            after = detail(shown, box)
            if before >= LEAK_DETAIL and after >= LEAK_KEPT * before:
                out.append((face.box, after / before))
        return out


def _thumbnail(rgb: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    small = cv2.resize(rgb.astype(np.uint8), (rgb.shape[1] // 8, rgb.shape[0] // 8),
                       interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.int16)


def detail(rgb: npt.NDArray[np.int16], box: Box) -> float:
    grey = cv2.cvtColor(rgb[box.y:box.bottom, box.x:box.right].astype(np.uint8),
                        cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def wait_for_state(page: Page, camera: str, state: str, timeout_ms: int) -> str:
    selector = f'.tile[data-camera="{camera}"]'
    page.wait_for_function(
        f"() => document.querySelector('{selector}')?.dataset.state === '{state}'",
        timeout=timeout_ms)
    return page.locator(f"{selector} .state").inner_text()


def test_nine_redacted_tiles_for_a_viewer(browser: Browser, nine: Nine) -> None:
    node = nine.node
    wait_until_running(node, len(CAMERAS))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, clicked = sign_in_to(browser, nine.url, VIEWER, "/?layout=9")
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('.tile[data-camera] img')];"
        " return t.length === 9 && t.every(i => Number(i.dataset.frames) >= 1); }",
        timeout=120_000)
    all_shown = time.monotonic() - clicked
    print(f"\nsign-in to all 9 tiles showing a picture: {all_shown:.2f} s ({load()})")

    # -- picture age and rate, per tile ---------------------------------------------------
    before = {c: page.locator(f'.tile[data-camera="{c}"] img')
              .screenshot(mask=[page.locator(".watermark")]) for c in CAMERAS}
    cpu = cpu_by_part(node)
    first = page.evaluate(TILES_JS)
    started = time.monotonic()
    ages: dict[str, list[float]] = {c: [] for c in CAMERAS}
    states: dict[str, set[str]] = {c: set() for c in CAMERAS}
    while time.monotonic() - started < SAMPLE_SECONDS:
        seen = page.evaluate(TILES_JS)
        for tile in seen["tiles"]:
            ages[tile["camera"]].append(seen["now"] - tile["capture"])
            states[tile["camera"]].add(tile["state"])
        time.sleep(0.25)
    last = page.evaluate(TILES_JS)
    elapsed = time.monotonic() - started
    used = {part: (seconds - cpu[part]) / elapsed for part, seconds in cpu_by_part(node).items()}
    after = {c: page.locator(f'.tile[data-camera="{c}"] img')
              .screenshot(mask=[page.locator(".watermark")]) for c in CAMERAS}
    page.screenshot(path=SHOTS / "nine-tiles.png")

    frames = {t["camera"]: t["frames"] for t in first["tiles"]}
    print(f"picture age on screen over {elapsed:.0f} s, sampled every 0.25 s ({load()}):")
    every: list[float] = []
    for tile in last["tiles"]:
        name = tile["camera"]
        fps = (tile["frames"] - frames[name]) / elapsed
        every += ages[name]
        print(f"  {name}: p50 {statistics.median(ages[name]):.2f} s, "
              f"p90 {statistics.quantiles(ages[name], n=10)[-1]:.2f} s, {fps:.1f} pictures/s, "
              f"states {sorted(states[name])}, says {tile['says']!r}")
    print(f"  all tiles: p50 {statistics.median(every):.2f} s, "
          f"p90 {statistics.quantiles(every, n=10)[-1]:.2f} s")
    costs = [s.cost_ms for c in CAMERAS if (s := read_state(node.layout.live, c)) is not None]
    print(f"CPU: live picture process {100 * used['live']:.0f}% of a core, "
          f"{100 * used['live'] / len(CAMERAS):.1f}% per watched tile, "
          f"{statistics.mean(costs) if costs else 0:.0f} ms per picture in its search thread; "
          + ", ".join(f"{part} {100 * share:.0f}%" for part, share in used.items()
                      if part != "live") + f" ({load()})")
    for tile in last["tiles"]:
        name = tile["camera"]
        assert tile["frames"] > frames[name], f"{name}: no new picture in {elapsed:.0f} s"
        assert before[name] != after[name], f"{name}: its picture did not change"
        assert tile["state"] in ("live", "busy"), f"{name}: {tile['state']} ({tile['says']})"
        assert tile["says"], f"{name} does not say its state"

    # -- redacted: no unblurred face in what the viewer is shown ----------------------------
    truth = Truth(nine.people, FaceDetector(min_size=0))
    checked = set()
    for _ in range(4):
        for name in CAMERAS[::2]:  # the cameras showing people
            shown = page.evaluate(SHOWN_JS, name)
            checked.add((name, shown["capture"]))
            jpeg = bytes(shown["jpeg"])
            leaks = truth.unblurred(jpeg)
            if leaks:  # kept for whoever looks into it
                (SHOTS / f"leak-{name}-{shown['capture']}.jpg").write_bytes(jpeg)
            assert not leaks, f"{name}: a face shown (kept in {SHOTS})"
        time.sleep(1.0)
    print(f"{len(checked)} pictures shown on the people cameras' tiles checked for faces")

    # -- states: a camera down, a camera the viewer may no longer watch ---------------------
    nine.sim.stop_camera("cam08")
    says = wait_for_state(page, "cam08", "down", 60_000)
    print(f"cam08 stopped, its tile says {says!r}")
    assert "camera down" in says
    nine.users.update(VIEWER, cameras=[c for c in CAMERAS if c != "cam09"])
    says = wait_for_state(page, "cam09", "forbidden", 30_000)
    print(f"cam09 taken from the viewer, its tile says {says!r}")
    assert "no permission" in says
    # The camera that went down keeps its last picture, dimmed, with its age; the one the
    # viewer may no longer watch is taken off the screen.
    assert page.locator('.tile[data-camera="cam08"] img').get_attribute("src")
    assert page.locator('.tile[data-camera="cam08"] .latency').inner_text()
    assert not page.locator('.tile[data-camera="cam09"] img').get_attribute("src")
    page.screenshot(path=SHOTS / "down-and-forbidden.png")
    nine.sim.start_camera("cam08")
    nine.users.update(VIEWER, cameras=None)
    page.context.close()
