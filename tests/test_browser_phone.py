"""Issue 11, phones and small screens: the layout at 390 px, the school profile's device
policy (no pictures to phones), and the watermark on every picture shown.

The first tests run in-process (the rule that covers every picture route, the middleware, the
classification); the browser tests run a real recorder (browser_env) in the school profile
under Debian's Chromium at 390x844 and at desktop size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from playwright.sync_api import Browser, Page, expect
from starlette.websockets import WebSocketDisconnect

from browser_env import (
    PASSWORD,
    Recorder,
    chromium_available,
    fresh_screenshots,
    launch_chromium,
    start_recorder,
)
from custodes.api.devices import sends_pictures
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.config import parse_config
from custodes.privacy.devices import ClientKind, classify, picture_refusal
from custodes.privacy.policy import Profile
from test_auth import add_user, audit_entries, client, make_app, node_config, signed_in

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
DESKTOP = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
PICTURE_TYPES = re.compile(r"^(image/|video/|application/zip)")
# Files that hold no picture: the audit log.
NOT_PICTURES = {"/api/audit/export"}


# -- in-process: the rule, the classification, the middleware ----------------------------------


def _documented_types(route: APIRoute) -> set[str]:
    types = set()
    for response in (route.responses or {}).values():
        types |= set((response or {}).get("content", {}))
    return types


def test_every_route_that_sends_pictures_is_under_the_device_rule(tmp_path: Path) -> None:
    """A picture route the middleware's path rule missed would reach phones: every route whose
    documented answer is an image, a video or a zip, or that answers with a file, matches."""
    node = Node(parse_config(yaml.safe_dump(node_config(tmp_path))))
    app = make_app(node)
    checked = []
    for ctx in iter_route_contexts(app.routes):
        route, path = ctx.original_route, str(ctx.path)
        if isinstance(route, APIWebSocketRoute):
            assert sends_pictures(path), path  # live video by stream copy
            checked.append(path)
        if not isinstance(route, APIRoute):
            continue
        types = _documented_types(route)
        file_like = getattr(route.response_class, "__name__", "") == "FileResponse"
        if path not in NOT_PICTURES and (any(PICTURE_TYPES.match(t) for t in types) or (
                file_like and path.startswith("/api/"))):
            assert sends_pictures(path), (path, types)
            checked.append(path)
    assert "/api/cameras/{camera}/live.jpg" in checked
    assert "/api/events/{event_id}/snapshot.jpg" in checked
    assert "/api/exports/{export_id}/download" in checked
    assert "/api/inspection/pack" in checked  # it holds each camera's redacted view
    assert sends_pictures("/api/system/cameras/test")  # JSON with a preview picture
    assert not sends_pictures("/api/cameras/{camera}/timeline")
    assert not sends_pictures("/api/events")


def test_what_a_request_says_about_its_device() -> None:
    assert classify({"sec-ch-ua-mobile": "?1"}, {}).kind is ClientKind.MOBILE
    assert classify({"user-agent": IPHONE}, {}).kind is ClientKind.MOBILE
    assert classify({"user-agent": DESKTOP, "sec-ch-ua-mobile": "?0"}, {}).kind \
        is ClientKind.DESKTOP
    small = classify({"user-agent": DESKTOP}, {"custodes_screen": "390x844"})
    assert small.kind is ClientKind.SMALL_SCREEN
    assert "390x844" in small.evidence
    # A phone held sideways is still a phone; a large screen, or rubbish, is not small.
    assert classify({}, {"custodes_screen": "844x390"}).kind is ClientKind.SMALL_SCREEN
    assert classify({}, {"custodes_screen": "1920x1080"}).kind is ClientKind.DESKTOP
    assert classify({}, {"custodes_screen": "x; DROP"}).kind is ClientKind.DESKTOP
    phone = classify({"user-agent": IPHONE}, {})
    reason = picture_refusal(Profile.SCHOOL, phone)
    assert reason is not None
    assert "school profile shows no video or pictures on phones" in reason
    assert picture_refusal(Profile.MUNICIPAL, phone) is not None
    assert picture_refusal(Profile.POLICE, phone) is None
    assert picture_refusal(Profile.SCHOOL, classify({"user-agent": DESKTOP}, {})) is None


@pytest.fixture
def school_app(tmp_path: Path) -> Iterator[FastAPI]:
    config = node_config(tmp_path)
    config["profile"] = "school"
    node = Node(parse_config(yaml.safe_dump(config)))
    node.layout.create()
    node.store.open()
    try:
        yield make_app(node)
    finally:
        node.store.close()


def test_the_school_profile_sends_no_picture_to_a_phone(school_app: FastAPI) -> None:
    node: Node = school_app.state.node
    olga = signed_in(school_app, add_user(school_app, "olga", Role.OPERATOR))
    phone = {"user-agent": IPHONE}
    r = olga.get("/api/cameras/cam1/live.jpg", headers=phone)
    assert r.status_code == 403
    assert "phones and small screens" in r.json()["detail"]
    r = olga.get("/api/cameras/cam1/live.jpg", headers={"sec-ch-ua-mobile": "?1"})
    assert r.status_code == 403
    # The live video stream (a WebSocket) is closed before it opens.
    with pytest.raises(WebSocketDisconnect) as closed, olga.websocket_connect(
            "/api/cameras/cam1/live/stream", headers=phone):
        pass
    assert closed.value.code == 4403
    olga.cookies.set("custodes_screen", "390x844", domain="testserver.local")
    assert olga.get("/api/exports/20260101-000000-0123abcd/download").status_code == 403
    olga.cookies.set("custodes_screen", "1920x1080", domain="testserver.local")
    # From a computer the route itself answers (no picture yet, no such export).
    assert olga.get("/api/cameras/cam1/live.jpg").status_code != 403
    assert olga.get("/api/exports/20260101-000000-0123abcd/download").status_code == 404

    # Refusals are on the record, once per user and ten minutes (tiles would flood it).
    refused = audit_entries(node, Action.DEVICE_REFUSED)
    assert [(e["actor"], e["outcome"]) for e in refused] == [("olga", "refused")]

    # The pages that show pictures explain instead; the others still work.
    live = olga.get("/", headers=phone)
    assert live.status_code == 403
    assert "No pictures on this device" in live.text
    assert "User-Agent names a mobile device (iPhone)" in live.text
    for path in ("/timeline", "/events"):
        assert olga.get(path, headers=phone).status_code == 403, path
    assert olga.get("/exports", headers=phone).status_code == 200

    # Anonymous phones are told to sign in, as everyone is.
    assert client(school_app).get("/api/cameras/cam1/live.jpg",
                                  headers=phone).status_code == 401


# -- in the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    chromium_available()
    # Not UTC: the watermark's time must be the site's, as every other time on the page.
    yield from start_recorder(shared_data, tmp_path_factory.mktemp("phone"),
                              timezone="Europe/Oslo")


@pytest.fixture(scope="module")
def browser(recorder: Recorder) -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture(scope="module")
def shots() -> Path:
    return fresh_screenshots()


def sign_in(browser: Browser, recorder: Recorder, name: str, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.goto(recorder.url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, "
                           "document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"{page.url}: content {widths[0]} px wide in {widths[1]}"


def inside_viewport(page: Page, selector: str) -> None:
    element = page.locator(selector)
    expect(element).to_be_visible()
    box = element.bounding_box()
    assert box is not None
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box["x"] >= 0, selector
    assert box["x"] + box["width"] <= width, (selector, box)


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3,
         "has_touch": True}


@pytest.mark.slow
def test_at_390_px_everything_is_reachable_and_no_picture_is_shown(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    page = sign_in(browser, recorder, "olga", **PHONE)
    # The landing page would show live pictures: the school profile explains instead.
    expect(page.locator("#device-refused")).to_be_visible()
    expect(page.locator("#device-refused")).to_contain_text("390x844")
    assert page.locator("main img, main video").count() == 0
    no_horizontal_overflow(page)
    inside_viewport(page, "#logout")
    page.screenshot(path=str(shots / "phone-refused.png"), full_page=True)

    # The pictures themselves are refused too, whatever the page does.
    r = page.request.get(recorder.url + "/api/cameras/cam01/live.jpg")
    assert r.status == 403
    assert "phones and small screens" in r.json()["detail"]

    page.goto(recorder.url + "/exports")
    no_horizontal_overflow(page)
    inside_viewport(page, "#logout")
    page.click("#new")
    inside_viewport(page, "#dialog")
    inside_viewport(page, "#create")
    no_horizontal_overflow(page)
    page.screenshot(path=str(shots / "phone-export-dialog.png"))

    ines = sign_in(browser, recorder, "ines", **PHONE)
    ines.goto(recorder.url + "/inspection")
    no_horizontal_overflow(ines)
    inside_viewport(ines, "#logout")
    # The pack holds each camera's redacted view: not to a phone either, and the page says so.
    expect(ines.locator("#pack-refused")).to_contain_text("cannot be downloaded here")
    assert ines.locator("#download-pack").count() == 0
    expect(ines.locator("#fingerprint")).to_contain_text("SHA256:")
    ines.screenshot(path=str(shots / "phone-inspection.png"), full_page=True)
    ines.context.close()
    page.context.close()


@pytest.mark.slow
def test_a_phone_browser_is_refused_even_with_a_large_window(
    browser: Browser, recorder: Recorder
) -> None:
    page = sign_in(browser, recorder, "olga", viewport={"width": 1400, "height": 900},
                   user_agent=IPHONE)
    expect(page.locator("#device-refused")).to_contain_text("iPhone")
    page.goto(recorder.url + "/timeline")
    expect(page.locator("#device-refused")).to_be_visible()
    page.context.close()


@pytest.mark.slow
def test_every_picture_shown_carries_the_viewers_name_and_the_time(
    browser: Browser, recorder: Recorder, shots: Path
) -> None:
    page = sign_in(browser, recorder, "olga", viewport={"width": 1400, "height": 900})
    page.wait_for_function(
        "() => document.querySelectorAll('.tile img, .tile video').length >= 2", timeout=120_000)
    marks = page.locator(".tile .watermark")
    expect(marks).to_have_count(2, timeout=30_000)
    stamp = re.compile(r"^olga · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d Europe/Oslo$")
    for mark in marks.all():
        expect(mark).to_be_visible()
        expect(mark).to_have_text(stamp)
    # On top of the picture: what is drawn at the mark's centre is the mark. (Hit testing
    # skips pointer-events: none, so the test lets the mark be hit for the moment.)
    on_top = page.evaluate("""() => [...document.querySelectorAll('.tile .watermark')].map(m => {
        m.style.pointerEvents = 'auto';
        const r = m.getBoundingClientRect();
        const hit = document.elementsFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        m.style.pointerEvents = '';
        const picture = m.parentElement.querySelector('img, video');
        return hit[0] === m && hit.indexOf(picture) > 0;
    })""")
    assert on_top == [True, True]
    first = marks.first.inner_text()
    page.wait_for_timeout(1500)
    assert marks.first.inner_text() != first  # the time runs
    page.locator(".tile").first.screenshot(path=str(shots / "watermark-tile.png"))

    # The playback player is marked as well.
    page.goto(recorder.url + "/timeline")
    expect(page.locator("#player > .watermark")).to_have_text(stamp)
    page.context.close()
