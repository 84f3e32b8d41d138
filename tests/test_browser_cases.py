"""Cases in a real browser (Debian's chromium via Playwright) against a real node's web server:
an investigator opens a case with a subject's photo, an approver approves it in another
browser, the investigator searches and sees the hits. The recorded faces are real descriptors
of other photos of the same person (and of a stranger), stored sealed as the event maintainer
stores them. The school profile's page explains why there are no cases, and two officers answer
a subject access request there (one records it, a second decides it, the first exports it).
Screenshots go to test-artifacts/screenshots/cases-*.png.

No camera runs (they are configured but disabled): the pages need the node's cases, users and
web server, not live video.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from browser_env import (
    IDLE_CAMERAS,
    PASSWORD,
    SCREENSHOTS,
    chromium_available,
    launch_chromium,
    node_config,
    serve_node,
)
from custodes.app import Node
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.faces.photos import describe_photo, read_image
from custodes.redaction.blur import blur_regions, encode_jpeg
from custodes.store import schema
from footage import add_segments, encode_clips
from people import People
from test_cases_api import add_face

pytestmark = pytest.mark.slow

HOUR = 3600.0
DAY = 24 * HOUR


def start_node(folder: Path, profile: str) -> Iterator[tuple[Node, str]]:
    config = node_config(folder, f"{profile}-test", IDLE_CAMERAS, profile=profile,
                         timezone="UTC")  # times typed as UTC
    for web in serve_node(config, {"ivan": Role.INVESTIGATOR, "dora": Role.APPROVER}):
        yield web.node, web.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_available()
    yield from launch_chromium()


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


def audited(node: Node, actor: str) -> list[tuple[str, str]]:
    """(action, outcome) of every audit entry by ``actor``, oldest first."""
    a = schema.audit_log.c
    with node.store.read() as conn:
        return [(r.action, r.outcome) for r in conn.execute(
            select(a.action, a.outcome).where(a.actor == actor).order_by(a.seq))]


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
        expect(dora.locator("#access-requests")).to_contain_text("No requests yet.")
        expect(dora.locator("#access-rows")).to_contain_text("No exports yet.")
        dora.screenshot(path=shots / "cases-04-list-approver.png")
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
        # What was searched is said, not only what was found.
        expect(ivan.locator("#search-message")).to_contain_text("face tracks searched")
        expect(ivan.locator("#coverage tr[data-camera]")).not_to_have_count(0)
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


def test_a_subject_access_request_is_recorded_decided_by_a_second_officer_and_exported(
        browser: Browser, people: People, shots: Path, tmp_path: Path) -> None:
    """Issue 10, item 6, in the page: dora records a request (its refusals shown with their
    reasons) and may not decide it herself; erin looks at the photo and approves it; dora
    starts its one export (first over a span without footage, which leaves it approved) and
    downloads it. Fred, a third officer, sees it but may neither export nor download it."""
    for node, url in start_node(tmp_path, "school"):
        users = Users(node.store)
        for name in ("erin", "fred"):
            users.add(name, Role.APPROVER, PASSWORD)
        t0 = float(int(time.time() - HOUR))
        photo = tmp_path / "requester.jpg"
        photo.write_bytes(people.subject_photos[0])
        no_face = tmp_path / "no-face.jpg"
        no_face.write_bytes(encode_jpeg(np.full((240, 320, 3), 128, np.uint8)))

        dora = sign_in(browser, url, "dora")
        expect(dora.locator("#access-requests")).to_contain_text("No requests yet.")
        expect(dora.locator("#access-rows")).to_contain_text("No exports yet.")
        dora.click("#new-access")
        expect(dora.locator("#access-dialog")).to_contain_text(
            "at most 2 hours of one camera")
        expect(dora.locator("#a-checked-by")).to_have_value("dora")
        dora.fill("#a-reference", "SAR 2026/3")
        dora.fill("#a-requester", "Pat Pupil")
        dora.fill("#a-identity-check", "passport seen in person")
        dora.fill("#a-checked-by", "nobody")
        dora.select_option("#a-camera", "cam01")
        dora.fill("#a-start", utc_input(t0))
        dora.fill("#a-end", utc_input(t0 + 6))
        dora.set_input_files("#a-photo", str(no_face))
        dora.click("#access-record")
        a_message = dora.locator("#a-message")
        expect(a_message).to_have_text(
            "the requester's photo: no face of at least 40 px found in the photo")
        dora.set_input_files("#a-photo", str(photo))
        dora.click("#access-record")
        expect(a_message).to_have_text(
            "Refused: nobody is not an enabled user: the identity check is signed by a named "
            "user")
        dora.screenshot(path=shots / "cases-09-subject-access-record-refused.png")
        dora.fill("#a-checked-by", "dora")
        dora.click("#access-record")
        expect(dora.locator("#access-dialog")).to_be_hidden()
        request = dora.locator("#access-requests tr[data-request]")
        expect(request).to_have_count(1)
        request_id = request.get_attribute("data-request")
        expect(dora.locator("#access-message")).to_have_text(
            f"Request #{request_id} (SAR 2026/3) recorded: a second officer must now decide it.")
        expect(request).to_have_attribute("data-status", "pending")
        # The recorder is told why she cannot decide it, and is offered nothing to click.
        expect(request.locator(".why")).to_have_text(
            "You recorded this request: a second officer must decide it.")
        assert request.locator("button").count() == 0
        dora.screenshot(path=shots / "cases-10-subject-access-pending-recorder.png")

        erin = sign_in(browser, url, "erin")
        erin_request = erin.locator(f"#access-requests tr[data-request='{request_id}']")
        expect(erin_request).to_have_attribute("data-status", "pending")
        erin_request.locator("button.decide").click()
        expect(erin.locator("#d-facts")).to_contain_text("passport seen in person")
        expect(erin.locator("#d-facts")).to_contain_text("Pat Pupil")
        expect(erin.locator("#d-photo")).to_be_hidden()  # shown (and audited) only on request
        erin.click("#d-show-photo")
        erin.wait_for_function("() => document.querySelector('#d-photo').naturalWidth > 0")
        assert ("subject_access.photo", "ok") in audited(node, "erin")
        erin.fill("#d-note", "photo matches the passport")
        erin.screenshot(path=shots / "cases-11-subject-access-decide.png")
        erin.click("#d-approve")
        expect(erin.locator("#decide-dialog")).to_be_hidden()
        expect(erin.locator("#access-message")).to_have_text(
            f"Request #{request_id} approved: dora or you may now start its export.")
        expect(erin_request).to_have_attribute("data-status", "approved")
        expect(erin_request).to_contain_text("photo matches the passport")
        expect(erin_request.locator("button.export")).to_be_visible()  # the decider may too

        fred = sign_in(browser, url, "fred")
        fred_request = fred.locator(f"#access-requests tr[data-request='{request_id}']")
        expect(fred_request.locator(".why")).to_have_text(
            "Only dora and erin, who answered it, may export it.")

        # No footage in the span yet: the refusal is shown and the request stays approved.
        dora.reload()
        expect(request).to_have_attribute("data-status", "approved")
        request.locator("button.export").click()
        expect(dora.locator("#access-message")).to_contain_text(
            "no recordings of cam01 between")
        expect(request).to_have_attribute("data-status", "approved")
        dora.screenshot(path=shots / "cases-12-subject-access-no-footage.png")

        clips = encode_clips(tmp_path / "clips", count=3)
        add_segments(node.store, node.layout, "cam01", [t0, t0 + 2, t0 + 4], clips)
        request.locator("button.export").click()
        expect(dora.locator("#access-message")).to_contain_text(
            f"started for request #{request_id}")
        expect(request).to_have_attribute("data-status", "exported")
        assert request.locator("button").count() == 0  # one export per request
        export = dora.locator("#access-rows tr[data-export]")
        expect(export).to_have_count(1)
        expect(export).to_contain_text("SAR 2026/3")
        download = export.locator("a.download")
        expect(download).to_be_visible(timeout=120_000)
        dora.screenshot(path=shots / "cases-13-subject-access-exported.png")
        with dora.expect_download() as got:
            download.click()
        saved = tmp_path / "download.zip"
        got.value.save_as(saved)
        with zipfile.ZipFile(saved) as bundle:
            assert any(n.endswith(".mp4") for n in bundle.namelist()), bundle.namelist()
        assert ("export.download", "ok") in audited(node, "dora")

        erin.reload()
        expect(erin.locator("#access-rows tr[data-export] a.download")).to_be_visible()
        fred.reload()
        fred_export = fred.locator("#access-rows tr[data-export]")
        expect(fred_export.locator(".why")).to_have_text(
            "Only dora and erin may download it.")
        assert fred_export.locator("a.download").count() == 0
