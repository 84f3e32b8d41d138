"""Cases in a real browser (Debian's chromium via Playwright) against a real node's web server:
an investigator opens a case with a subject's photo, an approver approves it in another
browser, the investigator searches and sees the hits. The recorded faces are real descriptors
of other photos of the same person (and of a stranger), stored sealed as the event maintainer
stores them. The school profile's page explains why there are no cases. Screenshots go to
test-artifacts/screenshots/cases-*.png.

No camera runs (they are configured but disabled): the pages need the node's cases, users and
web server, not live video.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from browser_env import CHROMIUM, PASSWORD, SCREENSHOTS, chromium_available
from custodes.app import Node
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.config import parse_config
from custodes.faces.photos import describe_photo, read_image
from custodes.redaction.blur import blur_regions, encode_jpeg
from people import People
from test_cases_api import add_face

pytestmark = pytest.mark.slow

HOUR = 3600.0
DAY = 24 * HOUR


def start_node(folder: Path, profile: str) -> Iterator[tuple[Node, str]]:
    config = parse_config(yaml.safe_dump({
        "node": {"name": f"{profile}-test"},
        "profile": profile,
        "sites": {"site": {"name": "Test site"}},
        "cameras": {
            name: {"site": "site", "location": location, "purpose": "browser test",
                   "main_url": f"rtsp://127.0.0.1:1/{name}", "enabled": False}
            for name, location in (("cam01", "entrance"), ("cam02", "corridor"))
        },
        "storage": {"path": str(folder / "var")},
        "server": {"host": "127.0.0.1", "port": 0},
    }))
    node = Node(config)
    node.start()
    try:
        users = Users(node.store)
        for name, role in (("ivan", Role.INVESTIGATOR), ("dora", Role.APPROVER)):
            users.add(name, role, PASSWORD)
        assert node.web is not None
        yield node, node.web.url.rstrip("/")
    finally:
        node.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_available()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    # Only this file's pictures are replaced: the other browser tests keep theirs.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("cases-*.png"):
        old.unlink()
    return SCREENSHOTS


def sign_in(browser: Browser, url: str, name: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(url + "/login?next=/cases")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/cases")
    return page


def redacted_snapshot(photo: bytes) -> bytes:
    """The photo with its face blurred, as the analysis writes an event's snapshot."""
    rgb = read_image(photo)
    return encode_jpeg(blur_regions(rgb, [describe_photo(rgb).box]))


def utc_input(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def test_open_approve_and_search_a_case(browser: Browser, people: People, shots: Path,
                                        tmp_path: Path) -> None:
    for node, url in start_node(tmp_path, "police"):
        now = time.time()
        t0, t1 = now - 2 * DAY, now - DAY
        snapshot = redacted_snapshot(people.subject_photos[1])
        inside = [add_face(node, "cam01", t0 + HOUR, people.same[0], snapshot=snapshot),
                  add_face(node, "cam02", t0 + 3 * HOUR, people.same[1], snapshot=snapshot)]
        add_face(node, "cam01", t0 - HOUR, people.same[2])  # before the scope
        add_face(node, "cam01", t0 + 2 * HOUR, people.other[0])  # a stranger
        photo = tmp_path / "subject.jpg"
        photo.write_bytes(people.subject_photos[0])

        ivan = sign_in(browser, url, "ivan")
        expect(ivan.locator("#rows")).to_contain_text("No cases.")
        ivan.click("#new-case")
        ivan.fill("#c-reference", "court order 2026/17")
        ivan.fill("#c-basis", "Code of criminal procedure §100")
        ivan.fill("#c-purpose", "find the missing person")
        ivan.select_option("#c-cameras", ["cam01", "cam02"])
        ivan.fill("#c-start", utc_input(t0))
        ivan.fill("#c-end", utc_input(t1))
        ivan.fill("#c-expires", utc_input(now + 7 * DAY))
        ivan.fill("#c-label", "missing person")
        ivan.set_input_files("#c-photos", str(photo))
        ivan.screenshot(path=shots / "cases-01-open-form.png")
        ivan.click("#open")
        ivan.wait_for_url(lambda u: "/cases/" in u)
        case_url = ivan.url
        expect(ivan.locator("#case-status")).to_have_text("pending")
        expect(ivan.locator("#subjects img.crop")).to_have_count(1)
        ivan.wait_for_function("() => document.querySelector('#subjects img.crop')"
                               ".naturalWidth > 0")
        assert ivan.locator("#approve").count() == 0  # not an approver
        expect(ivan.locator("#search-panel")).to_be_hidden()
        ivan.screenshot(path=shots / "cases-02-pending.png")

        # Made an approver, ivan still may not approve his own case: the page says why.
        users = Users(node.store)
        users.update("ivan", role=Role.APPROVER)
        ivan.reload()
        ivan.click("#approve")
        expect(ivan.locator("#decide-message")).to_have_text(
            "Refused: a case cannot be approved by the user who opened it")
        ivan.screenshot(path=shots / "cases-03-self-approval-refused.png")
        users.update("ivan", role=Role.INVESTIGATOR)

        dora = sign_in(browser, url, "dora")
        expect(dora.locator("#rows tr[data-case]")).to_have_count(1)
        expect(dora.locator("#access-rows")).to_contain_text("No requests yet.")
        dora.screenshot(path=shots / "cases-04-list-approver.png")
        # A subject access request over footage that does not exist says so.
        dora.click("#new-access")
        dora.fill("#a-reference", "access request 2026/3")
        dora.set_input_files("#a-photo", str(photo))
        dora.click("#access-start")
        expect(dora.locator("#a-message")).to_contain_text("no recordings of cam01 between")
        dora.screenshot(path=shots / "cases-04b-subject-access-no-footage.png")
        dora.click("#access-cancel")
        dora.click("#rows a >> nth=0")
        dora.fill("#note", "order checked")
        dora.click("#approve")
        expect(dora.locator("#case-status")).to_have_text("approved")
        expect(dora.locator("#message")).to_have_text("Case approved.")
        dora.screenshot(path=shots / "cases-05-approved.png")

        ivan.goto(case_url)
        expect(ivan.locator("#search-panel")).to_be_visible()
        ivan.click("#search-button")
        rows = ivan.locator("#hits tr[data-face]")
        expect(rows).to_have_count(len(inside))
        assert sorted(int(r.get_attribute("data-face") or 0) for r in rows.all()) == inside
        ivan.wait_for_function(
            "() => [...document.querySelectorAll('#hits img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        play = rows.first.locator("a.button")
        assert (play.get_attribute("href") or "").startswith("/timeline?camera=cam0")
        ivan.screenshot(path=shots / "cases-06-search-results.png", full_page=True)

        # Asking for more than the scope is refused, with the reason.
        ivan.fill("#search input[name=start]", utc_input(t0 - DAY))
        ivan.click("#search-button")
        expect(ivan.locator("#search-message")).to_have_text(
            "Refused: the time asked for is outside the case's scope")
        expect(ivan.locator("#hits-table")).to_be_hidden()
        ivan.screenshot(path=shots / "cases-07-search-refused.png")


def test_the_school_profile_explains_that_there_is_no_identification(
        browser: Browser, shots: Path, tmp_path: Path) -> None:
    for _node, url in start_node(tmp_path, "school"):
        ivan = sign_in(browser, url, "ivan")
        expect(ivan.locator("#not-available")).to_contain_text(
            "the school profile does not allow face search")
        assert ivan.locator("#new-case").count() == 0
        ivan.screenshot(path=shots / "cases-08-school-profile.png")
        # A school can still answer a subject access request.
        dora = sign_in(browser, url, "dora")
        expect(dora.locator("#not-available")).to_be_visible()
        expect(dora.locator("#new-access")).to_be_visible()
