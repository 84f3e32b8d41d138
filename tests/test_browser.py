"""The web UI in a real browser (Debian's chromium, driven by Playwright) against a real
recorder with simulated cameras: sign-in, live grid, timeline playback, role limits, exports,
the audit view. Each page is saved as a screenshot under test-artifacts/screenshots/.

Measured here and printed (run with -s to see): the live pictures' age when shown, and the
time from a click on the timeline to the first frame of video on screen.
"""

from __future__ import annotations

import statistics
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from browser_env import (
    CHROMIUM,
    PASSWORD,
    Recorder,
    chromium_available,
    fresh_screenshots,
    start_recorder,
)
from custodes.record.manifest import verify_bundle

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def recorder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    chromium_available()
    yield from start_recorder(shared_data, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def browser(recorder: Recorder) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    return fresh_screenshots()


def sign_in(browser: Browser, recorder: Recorder, name: str) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  accept_downloads=True)
    page = context.new_page()
    page.goto(recorder.url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def test_sign_in_refuses_a_wrong_password_and_lands_on_the_live_grid(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(recorder.url + "/timeline")
    assert "/login?next=" in page.url
    page.fill("#name", "olga")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("#message")).to_have_text("wrong name or password")
    page.screenshot(path=shots / "01-login-failed.png")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(recorder.url + "/timeline")
    expect(page.locator("#who")).to_have_text("olga")
    page.close()


def test_the_live_grid_shows_moving_redacted_pictures(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    page = sign_in(browser, recorder, "olga")
    assert urlsplit(page.url).path == "/"
    tiles = page.locator(".tile[data-camera]")
    expect(tiles).to_have_count(2)
    first = page.locator('.tile[data-camera="cam01"] img')
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile img')]"
        ".every(i => Number(i.dataset.frames) >= 2)", timeout=90_000)
    before = page.locator('.tile[data-camera="cam02"]').screenshot()
    t1 = float(first.get_attribute("data-capture") or 0)
    ages: list[float] = []  # capture to shown
    served: list[float] = []  # capture to sent by the server
    deadline = time.monotonic() + 8
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for img in page.locator(".tile img").all():
            key = f"{img.get_attribute('alt')}:{img.get_attribute('data-capture')}"
            age, sent = img.get_attribute("data-latency"), img.get_attribute("data-served")
            if age and sent and key not in seen:
                seen.add(key)
                ages.append(float(age))
                served.append(float(sent))
        time.sleep(0.05)
    t2 = float(first.get_attribute("data-capture") or 0)
    after = page.locator('.tile[data-camera="cam02"]').screenshot()
    assert t2 > t1, "the live picture did not change"
    assert before != after, "two live pictures taken seconds apart look the same"
    print(f"\nlive picture age when shown: median {statistics.median(ages) * 1000:.0f} ms, "
          f"p90 {statistics.quantiles(ages, n=10)[-1] * 1000:.0f} ms over {len(ages)} pictures"
          f" (2 cameras); of which capture to sent: median "
          f"{statistics.median(served) * 1000:.0f} ms; pictures per second per camera: "
          f"{len(ages) / 8 / 2:.1f}")
    page.screenshot(path=shots / "02-live-grid-4.png")
    page.click("[data-layout='1']")
    page.wait_for_function("() => Number(document.querySelector('.tile img')?.dataset.frames) >= 1",
                           timeout=30_000)
    page.screenshot(path=shots / "03-live-grid-1.png")
    page.close()


def click_at(page: Page, bar: str, t: float) -> None:
    box = page.evaluate(
        """([sel, t]) => {
             const b = document.querySelector(sel), r = b.getBoundingClientRect();
             return {x: r.left + r.width * (t - b.from) / (b.to - b.from),
                     y: r.top + r.height / 2};
           }""",
        [bar, t])
    page.mouse.click(box["x"], box["y"])


def video_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(
        """() => { const p = window.custodesPlayer; const v = p.video();
             return {t: p.playing(), current: v.currentTime, paused: v.paused,
                     frames: p.firstFrames.slice(), src: v.currentSrc}; }""")
    return state


def test_the_timeline_plays_a_recorded_moment_and_seeks(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    recorder.wait_for_footage(16)
    page = sign_in(browser, recorder, "olga")
    page.goto(recorder.url + "/timeline?camera=cam01")
    page.select_option("#zoom", "600")  # ten minutes: a 2 s segment is wide enough to hit
    page.wait_for_function("() => document.querySelectorAll('#detailbar .span').length > 0")
    coverage = page.evaluate(
        "() => fetch('/api/cameras/cam01/timeline?start=' + (Date.now() / 1000 - 600) + '&end=' +"
        " Date.now() / 1000).then(r => r.json()).then(j => j.coverage)")
    span = max(coverage, key=lambda s: s["end"] - s["start"])
    assert span["end"] - span["start"] >= 12

    # Plays from the moment clicked, and time advances.
    target = span["start"] + 3.3
    click_at(page, "#detailbar", target)
    page.wait_for_function("() => window.custodesPlayer.firstFrames.length >= 1", timeout=20_000)
    first = video_state(page)
    assert abs(first["t"] - target) < 1.5
    assert "/api/segments/" in first["src"]
    assert first["src"].endswith("/video")
    time.sleep(1.5)
    later = video_state(page)
    assert later["t"] > first["t"] + 0.5, "the video does not advance"
    assert not later["paused"]
    page.screenshot(path=shots / "04-timeline-playing.png")

    # Seeks: a click elsewhere moves the playing time there; so does the +10 s button.
    for n, offset in enumerate((8.1, 1.7, 6.4, 10.2, 4.9, 2.6, 9.3)):
        click_at(page, "#detailbar", span["start"] + offset)
        page.wait_for_function(f"() => window.custodesPlayer.firstFrames.length >= {n + 2}",
                               timeout=20_000)
        assert abs(video_state(page)["t"] - (span["start"] + offset)) < 1.5
    before = video_state(page)["t"]
    step = -10 if before - span["start"] > 10 else 10
    page.click(f"[data-step='{step}']")
    page.wait_for_timeout(800)
    moved = video_state(page)["t"]
    assert abs(moved - (before + step)) < 2.5

    frames = video_state(page)["frames"]
    print(f"\nclick to first frame (original segments, {len(frames)} clicks): median "
          f"{statistics.median(frames):.0f} ms, max {max(frames):.0f} ms; all: "
          + ", ".join(f"{f:.0f}" for f in frames))
    expect(page.locator("#firstframe")).to_contain_text("first frame")
    page.screenshot(path=shots / "05-timeline-seeked.png")
    page.close()


def test_a_viewer_cannot_reach_cases_or_unredacted_playback(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    recorder.wait_for_footage(8)
    page = sign_in(browser, recorder, "viktor")
    nav = page.locator("header nav a")
    labels = nav.all_inner_texts()
    assert labels == ["Live", "Timeline", "Events"], labels
    api = page.request
    playback = api.get(recorder.url + "/api/cameras/cam02/playback",
                       params={"at": time.time() - 30}).json()
    assert playback["redacted"] is True
    segment = playback["segments"][0]
    assert segment["url"].endswith("/redacted")
    original = api.get(recorder.url + f"/api/segments/{segment['id']}/video")
    assert original.status == 403
    assert "playback.unredacted" in original.json()["detail"]
    cases = api.get(recorder.url + "/api/cases")
    assert cases.status == 403
    cases_page = page.goto(recorder.url + "/cases")
    assert cases_page is not None
    assert cases_page.status == 403
    assert page.goto(recorder.url + "/audit").status == 403  # type: ignore[union-attr]
    page.screenshot(path=shots / "06-viewer-refused-audit.png")

    # What a viewer does get: the redacted copy, made on first request (measured, not fast).
    page.goto(recorder.url + "/timeline?camera=cam01")
    page.wait_for_function("() => document.querySelectorAll('#daybar .span').length > 0")
    expect(page.locator("#redacted")).to_be_checked()
    expect(page.locator("#redacted")).to_be_disabled()
    page.select_option("#zoom", "600")
    now = time.time()
    click_at(page, "#detailbar", now - 20)
    page.wait_for_function("() => window.custodesPlayer.firstFrames.length >= 1",
                           timeout=120_000)
    state = video_state(page)
    assert state["src"].endswith("/redacted")
    print(f"\nclick to first frame, redacted copy made on demand: {state['frames'][0]:.0f} ms")
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "07-viewer-timeline-redacted.png")
    page.close()


def test_an_export_downloads_and_verifies(
    browser: Browser, recorder: Recorder, shots: Path, tmp_path: Path
) -> None:
    recorder.wait_for_footage(10)
    page = sign_in(browser, recorder, "olga")
    # A range without holes (a loaded machine can lose a segment, and an export over a hole
    # is refused, rightly).
    coverage = page.request.get(recorder.url + "/api/cameras/cam01/timeline", params={
        "start": time.time() - 300, "end": time.time()}).json()["coverage"]
    span = next(s for s in reversed(coverage) if s["end"] - s["start"] >= 7)
    end = int(span["end"]) - 1
    page.goto(recorder.url + f"/exports?camera=cam01&start={end - 4}&end={end}")
    expect(page.locator("#dialog")).to_be_visible()
    expect(page.locator("#x-redact")).to_be_checked()
    page.screenshot(path=shots / "08-export-dialog.png")
    page.click("#create")
    row = page.locator("tr[data-export]").first
    expect(row.locator(".badge").first).to_have_text("done", timeout=180_000)
    with page.expect_download() as info:
        row.locator("a.download").click()
    archive = tmp_path / "export.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unpacked")
    [bundle] = [p for p in (tmp_path / "unpacked").iterdir() if p.is_dir()]
    report = verify_bundle(bundle, recorder.node.keys.public_pem)
    assert report.ok, report.problems
    assert report.manifest is not None
    assert report.manifest["redaction"]["applied"] is True
    row.locator("button.check").click()
    expect(row.locator(".verify")).to_contain_text("signature and checksums valid")
    page.screenshot(path=shots / "09-exports.png")

    page.goto(recorder.url + "/events")
    page.wait_for_selector("#rows tr", timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('img.thumb')].slice(0, 6)"
                           ".every(i => i.complete)")
    page.screenshot(path=shots / "10-events.png")
    page.close()


def test_a_failed_sign_in_is_visible_in_the_audit_view(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    anonymous = browser.new_page()
    anonymous.goto(recorder.url + "/login")
    anonymous.fill("#name", "mallory")
    anonymous.fill("#password", "guessing-again")
    anonymous.click("button[type=submit]")
    expect(anonymous.locator("#message")).to_have_text("wrong name or password")
    anonymous.close()

    page = sign_in(browser, recorder, "ines")
    assert urlsplit(page.url).path in ("/cases", "/audit")  # an inspector has no live view
    page.goto(recorder.url + "/audit")
    assert page.locator("header nav a").all_inner_texts() == ["Cases", "Audit", "System"]
    page.fill("input[name=action]", "login")
    page.select_option("select[name=outcome]", "failed")
    page.click("#filters button[type=submit]")
    hit = page.locator("#rows tr", has_text="mallory")
    expect(hit).to_have_count(1)
    expect(hit.locator(".badge")).to_have_text("failed")
    page.click("#verify")
    expect(page.locator("#verdict")).to_contain_text("chain intact", timeout=30_000)
    page.screenshot(path=shots / "11-audit-failed-login.png")
    page.goto(recorder.url + "/system")
    expect(page.locator("#cameras")).to_contain_text("cam02")
    page.screenshot(path=shots / "12-system-inspector.png", full_page=True)
    page.close()
