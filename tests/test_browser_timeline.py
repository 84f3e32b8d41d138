"""Site-local time and the review queue in a real browser (Debian's chromium under
Playwright) against a real recorder whose site is in Asia/Kathmandu (UTC+05:45: neither UTC
nor a whole hour off it, so a time shown in the wrong zone cannot pass by accident).

The timeline names the zone, shows local times, goes to a typed local time, and paints no
"no recording" before the camera's first recording; the events page acknowledges one event
and then every event shown, and asks for no snapshot that is not there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, Response, expect

from browser_env import (
    PASSWORD,
    SCREENSHOTS,
    Recorder,
    chromium_available,
    launch_chromium,
    start_recorder,
)

pytestmark = pytest.mark.slow

ZONE = "Asia/Kathmandu"


def local(t: float) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def recorder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    chromium_available()
    yield from start_recorder(shared_data, tmp_path_factory.mktemp("browser-tz"), timezone=ZONE)


@pytest.fixture(scope="module")
def browser(recorder: Recorder) -> Iterator[Browser]:
    yield from launch_chromium()


def sign_in(browser: Browser, recorder: Recorder, name: str) -> Page:
    # The browser's own zone is another one again: what the page shows must not depend on it.
    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  timezone_id="America/New_York")
    page = context.new_page()
    page.goto(recorder.url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def api(page: Page, path: str) -> Any:
    return page.evaluate("(p) => fetch(p).then(r => r.json())", path)


def playing(page: Page) -> float | None:
    t: float | None = page.evaluate("() => window.custodesPlayer.playing()")
    return t


def test_the_timeline_shows_site_local_time_and_goes_to_a_typed_time(
    browser: Browser, recorder: Recorder
) -> None:
    recorder.wait_for_footage(12)
    page = sign_in(browser, recorder, "olga")
    page.goto(recorder.url + "/timeline?camera=cam01")
    expect(page.locator("#zone")).to_have_text(ZONE)
    page.select_option("#zoom", "600")
    page.wait_for_function("() => document.querySelectorAll('#detailbar .span').length > 0")
    today = datetime.now(ZoneInfo(ZONE)).date().isoformat()
    expect(page.locator("#day")).to_have_value(today)

    tl = api(page, f"/api/cameras/cam01/timeline?day={today}")
    assert tl["timezone"] == ZONE
    midnight = datetime.fromisoformat(today).replace(tzinfo=ZoneInfo(ZONE)).timestamp()
    assert tl["start"] == midnight  # the site's day, not the UTC one
    # The camera was installed minutes ago: the hours of the day before are not a gap.
    assert tl["installed"] is not None
    assert tl["installed"] > midnight + 60
    assert all(g["start"] >= tl["installed"] - 1 for g in tl["gaps"])
    lefts = page.evaluate(
        "() => [...document.querySelectorAll('#daybar .gap')].map(g => parseFloat(g.style.left))")
    installed_at = 100 * (tl["installed"] - tl["start"]) / (tl["end"] - tl["start"])
    assert all(left >= installed_at - 0.5 for left in lefts), (lefts, installed_at)
    # The day's ticks are the site's round hours: the first one at the bar's left edge.
    expect(page.locator("#dayticks span").first).to_have_text("00:00")

    # Go to a recorded moment typed as the site's local time, 24-hour.
    span = max(tl["coverage"], key=lambda s: s["end"] - s["start"])
    target = float(int(span["start"] + 4))
    page.fill("#goto", local(target))
    page.click("#goto-go")
    page.wait_for_function("() => window.custodesPlayer.firstFrames.length >= 1",
                           timeout=30_000)
    t = playing(page)
    assert t is not None
    assert abs(t - target) < 1.5
    clock = page.locator("#clock").inner_text()
    assert clock.endswith(ZONE)
    shown = datetime.strptime(clock[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
    assert abs(shown.timestamp() - target) < 3, clock
    # Only a time on the day shown, and a nonsense one, which is refused in words.
    page.fill("#goto", local(target + 2)[11:])
    page.click("#goto-go")
    page.wait_for_function("() => window.custodesPlayer.firstFrames.length >= 2",
                           timeout=30_000)
    t = playing(page)
    assert t is not None
    assert abs(t - (target + 2)) < 1.5
    page.fill("#goto", "10/03/2026 10:00 PM")
    page.click("#goto-go")
    expect(page.locator("#message")).to_contain_text("is not a time")

    # "Now": the newest recording; "-2 min": two minutes before the present.
    page.click("#goto-now")
    page.wait_for_function("() => window.custodesPlayer.firstFrames.length >= 3",
                           timeout=30_000)
    t = playing(page)
    assert t is not None
    assert time.time() - t < 20
    before = time.time()
    page.click("#goto-back2")
    typed = page.input_value("#goto")
    wanted = datetime.strptime(typed, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
    assert abs(wanted.timestamp() - (before - 120)) < 5
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "timeline-site-time.png")

    # The day before, typed as YYYY-MM-DD: all of it before the installation, so nothing
    # is painted as "no recording".
    yesterday = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
    assert api(page, f"/api/cameras/cam01/timeline?day={yesterday}")["gaps"] == []
    page.fill("#day", yesterday)
    page.press("#day", "Enter")
    expect(page.locator("#daybar .span")).to_have_count(0)
    expect(page.locator("#daybar .gap")).to_have_count(0)
    page.close()


def test_the_events_page_acknowledges_and_never_asks_for_a_missing_snapshot(
    browser: Browser, recorder: Recorder
) -> None:
    deadline = time.monotonic() + 120
    page = sign_in(browser, recorder, "olga")
    while time.monotonic() < deadline:
        events = api(page, "/api/events?limit=50")["events"]
        if len(events) >= 2:
            break
        time.sleep(1)
    else:
        pytest.fail("the recorder made fewer than 2 events in 120 s")

    failed: list[str] = []

    def watch(response: Response) -> None:
        if "/snapshot.jpg" in response.url and response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", watch)
    page.goto(recorder.url + "/events")
    rows = page.locator("#rows tr")
    expect(rows.first).to_be_visible()
    first_id = int(rows.first.get_attribute("data-event") or 0)
    event = next(e for e in api(page, "/api/events?limit=500")["events"] if e["id"] == first_id)
    expect(rows.first.locator("td").nth(1)).to_have_text(local(event["start"]))
    expect(page.locator("thead")).to_contain_text(f"time ({ZONE})")

    # One event: acknowledged, showing who and when.
    rows.first.locator("button.ack-one").click()
    expect(rows.first.locator("td.review")).to_contain_text("✓ olga")
    # Every event shown.
    page.click("#ack-all")
    expect(page.locator("#message")).to_contain_text("acknowledged")
    shown = [int(r.get_attribute("data-event") or 0) for r in rows.all()]
    expect(page.locator("#rows button.ack-one")).to_have_count(0)
    listed = {e["id"]: e for e in api(page, "/api/events?limit=500")["events"]}
    assert all(listed[i]["acknowledged_by"] == "olga" for i in shown if i in listed)
    # The queue of what is left: only what came in since.
    page.check("input[name=unacknowledged]")
    page.click("#filters button[type=submit]")
    page.wait_for_timeout(500)
    remaining = [int(r.get_attribute("data-event") or 0) for r in rows.all()]
    assert not set(remaining) & set(shown)
    assert not failed, failed  # no snapshot asked for that is not there
    page.uncheck("input[name=unacknowledged]")
    page.click("#filters button[type=submit]")
    expect(rows.first).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "events-review.png")
    page.close()

    # A viewer sees the queue but has no acknowledge button.
    viewer = sign_in(browser, recorder, "viktor")
    viewer.goto(recorder.url + "/events")
    expect(viewer.locator("#rows tr").first).to_be_visible()
    expect(viewer.locator("button.ack-one")).to_have_count(0)
    expect(viewer.locator("#ack-all")).to_have_count(0)
    viewer.close()
