"""Administration in a real browser (Debian's chromium under Playwright): the first
administrator's forced password change, adding a user, resetting a password, a grant confirmed
by a second administrator, the grants page's filter, ending another session, and placing and
releasing a hold on the timeline. Screenshots go to test-artifacts/screenshots/admin-*.png.

The node runs with its cameras disabled (none of this needs video) but one, whose address
answers nothing: it is down, for the count of cameras down that every page shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from browser_env import (
    IDLE_CAMERAS,
    SCREENSHOTS,
    chromium_available,
    launch_chromium,
    node_config,
    serve_node,
)
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.auth.users import Users
from custodes.store import schema

pytestmark = pytest.mark.slow

PASSWORD = "browser-admin-password"
ADMIN_PASSWORD = "the head teacher's own password"
DOWN = "cam03"  # recorded from an address where nothing answers: always down


@dataclass
class Site:
    node: Node
    url: str
    first_password: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    cameras = {**IDLE_CAMERAS, DOWN: {"location": "corridor",
                                      "main_url": f"rtsp://127.0.0.1:1/{DOWN}",
                                      "analytics": {"enabled": False}}}
    config = node_config(tmp_path_factory.mktemp("admin"), "admin-test", cameras)
    for web in serve_node(config, {"olga": Role.OPERATOR, "ada": Role.ADMIN}, PASSWORD):
        assert web.node.first_admin_password is not None
        yield Site(web.node, web.url, web.node.first_admin_password)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    chromium_available()
    yield from launch_chromium()


@pytest.fixture(scope="module")
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("admin-*.png"):
        old.unlink()
    return SCREENSHOTS


def sign_in(browser: Browser, site: Site, name: str, password: str = PASSWORD,
            target: str = "/") -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(site.url + "/login?next=" + target)
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def utc_input(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def audited(node: Node, action: Action) -> list[tuple[str, str, str]]:
    a = schema.audit_log.c
    with node.store.read() as conn:
        return [(r.actor, r.target, r.outcome) for r in conn.execute(
            select(a.actor, a.target, a.outcome).where(a.action == action.value)
            .order_by(a.seq))]


def test_the_first_sign_in_asks_for_a_new_password_first(browser: Browser, site: Site,
                                                         shots: Path) -> None:
    page = sign_in(browser, site, "admin", site.first_password, "/users")
    # Straight to the change, whatever was asked for; the reason is on the page.
    page.wait_for_url("**/account/password?next=%2Fusers")
    expect(page.locator("#forced")).to_contain_text("Choose your own before anything else")
    expect(page.locator("header nav a")).to_have_count(0)  # nothing else would open
    page.screenshot(path=shots / "admin-01-forced-password.png")
    # Another page still leads back here.
    page.goto(site.url + "/timeline")
    page.wait_for_url("**/account/password?next=%2Ftimeline")
    page.goto(site.url + "/account/password?next=%2Fusers")
    page.fill("#old-password", site.first_password)
    page.fill("#new-password", ADMIN_PASSWORD)
    page.fill("#new-password2", ADMIN_PASSWORD + "x")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#message")).to_have_text("the two new passwords differ")
    page.fill("#new-password2", ADMIN_PASSWORD)
    page.click("#password-form button[type=submit]")
    page.wait_for_url(site.url + "/users")
    expect(page.locator('nav a[data-nav="users"]')).to_have_class("active")
    expect(page.locator('tr[data-user="admin"]')).to_contain_text("set by the user")
    page.context.close()


def test_add_a_user_reset_a_password_and_confirm_a_grant(browser: Browser, site: Site,
                                                         shots: Path) -> None:
    page = sign_in(browser, site, "admin", ADMIN_PASSWORD, "/users")
    page.fill("#add-name", "paula")
    page.select_option("#add-role", "viewer")
    page.uncheck("#add-cameras input[data-all]")
    page.uncheck('#add-cameras input[value="cam02"]')
    page.click("#add-submit")
    expect(page.locator("#secret")).to_be_visible()
    first = page.locator("#secret-value").inner_text()
    assert len(first) >= 16
    row = page.locator('tr[data-user="paula"]')
    expect(row).to_contain_text("cam01")
    expect(row).not_to_contain_text("cam02")
    expect(row).to_contain_text("must change")
    page.screenshot(path=shots / "admin-02-user-added.png")
    page.click("#secret-done")
    # Nobody changes their own role: the page says so before the API would.
    page.click('button[data-edit="admin"]')
    expect(page.locator("#edit-role")).to_be_disabled()
    page.click("#edit-cancel")
    # A privileged role waits for a second administrator.
    page.fill("#add-name", "ivan")
    page.select_option("#add-role", "investigator")
    page.click("#add-submit")
    expect(page.locator("#message")).to_contain_text("waiting for a second administrator")
    expect(page.locator('tr[data-user="ivan"]')).to_have_count(0)
    expect(page.locator("#pending-count")).to_have_text("1")
    # Reset paula's password: a new one, shown once.
    page.once("dialog", lambda d: d.accept())
    page.click('button[data-reset="paula"]')
    expect(page.locator("#secret")).to_be_visible()
    reset = page.locator("#secret-value").inner_text()
    assert reset
    assert reset != first
    page.screenshot(path=shots / "admin-03-password-reset.png")
    # paula signs in with it and must choose her own first.
    paula = sign_in(browser, site, "paula", reset, "/timeline")
    paula.wait_for_url("**/account/password?next=%2Ftimeline")
    paula.context.close()
    # The requester cannot confirm the grant; the second administrator can.
    page.goto(site.url + "/users/grants")
    expect(page.locator("tr[data-grant] button[data-confirm]")).to_be_disabled()
    page.context.close()
    ada = sign_in(browser, site, "ada", PASSWORD, "/users/grants")
    ada.click("tr[data-grant] button[data-confirm]")
    expect(ada.locator("#secret")).to_be_visible()
    expect(ada.locator("#secret-user")).to_have_text("ivan")
    expect(ada.locator("tr[data-grant]").first).to_contain_text("confirmed")
    ada.screenshot(path=shots / "admin-04-grant-confirmed.png")
    ada.context.close()
    ivan = Users(site.node.store).get("ivan")
    assert ivan is not None
    assert (ivan.role, ivan.must_change_password) == (Role.INVESTIGATOR, True)


def test_the_grants_page_filters_by_user_kind_and_state(browser: Browser, site: Site,
                                                       shots: Path) -> None:
    page = sign_in(browser, site, "admin", ADMIN_PASSWORD, "/users")
    # A second grant: a reset of an administrator's password waits for another one.
    page.once("dialog", lambda d: d.accept())
    page.click('button[data-reset="ada"]')
    expect(page.locator("#message")).to_contain_text("Grants page")
    # The user's "waiting" leads to that user's pending grants, the filter filled in.
    page.click('tr[data-user="ada"] a:has-text("waiting")')
    page.wait_for_url("**/users/grants?status=pending&user=ada")
    rows = page.locator("tr[data-grant]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("password reset")
    expect(page.locator('#grant-filters [name="user"]')).to_have_value("ada")
    expect(page.locator('#grant-filters [name="status"]')).to_have_value("pending")
    # Every grant, then by kind (kept in the URL), then a filter nothing matches.
    page.click("#grant-filters-clear")
    expect(rows).to_have_count(2)
    page.select_option('#grant-filters [name="kind"]', "add")
    page.click("#grant-filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ivan")
    expect(rows.first).to_contain_text("confirmed")
    assert page.url.endswith("/users/grants?kind=add")
    page.screenshot(path=shots / "admin-04b-grants-filtered.png")
    page.fill('#grant-filters [name="user"]', "olga")
    page.click("#grant-filters button[type=submit]")
    expect(page.locator("#grant-rows")).to_have_text("No grant matches this filter.")
    page.context.close()


def test_every_page_counts_the_cameras_down(browser: Browser, site: Site, shots: Path) -> None:
    # An administrator (olga's sessions are counted below): any role that sees events.
    page = sign_in(browser, site, "ada", target="/account")
    events = page.locator('header nav a[data-nav="events"]')
    badge = events.locator("#cameras-down")
    expect(badge).to_have_text("1 down", timeout=60_000)
    expect(badge).to_have_attribute("title", re.compile(f"^{DOWN}: "))
    expect(events).to_have_attribute("href", "/events?kind=camera_offline")
    page.screenshot(path=shots / "admin-04c-camera-down.png")
    events.click()
    page.wait_for_url("**/events?kind=camera_offline")
    expect(page.locator("#rows")).to_contain_text(DOWN)
    page.context.close()


def test_the_count_of_cameras_down_is_asked_only_while_the_page_is_seen(
        browser: Browser, site: Site) -> None:
    """static/alerts.js asks /api/cameras at the live page's rate (5 s), but a page in the
    background asks nothing, and asks at once when it is shown again."""
    page = sign_in(browser, site, "ada", target="/account")
    expect(page.locator("#cameras-down")).to_have_text("1 down", timeout=60_000)
    for _ in range(2):  # kept current while seen, not only at load
        with page.expect_request(re.compile(r"/api/cameras$"), timeout=60_000):
            pass
    set_hidden = """(hidden) => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    page.evaluate(set_hidden, True)
    page.wait_for_timeout(1_000)  # a request already out when hidden is let through first
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/api/cameras")
            else None)
    # Six rounds at 5 s, and longer than the 30 s this asked at before regardless of being
    # seen: a page that kept asking in the background fails here, whatever the machine's load.
    page.wait_for_timeout(31_000)
    assert asked == []
    with page.expect_request(re.compile(r"/api/cameras$"), timeout=30_000):
        page.evaluate(set_hidden, False)
    page.context.close()


def test_end_another_session_and_make_a_token(browser: Browser, site: Site,
                                              shots: Path) -> None:
    laptop = sign_in(browser, site, "olga", target="/account")
    other = sign_in(browser, site, "olga", target="/timeline")
    laptop.reload()
    rows = laptop.locator("#session-rows tr")
    expect(rows).to_have_count(2)
    expect(laptop.locator("#session-rows")).to_contain_text("this browser")
    expect(laptop.locator("#session-rows")).to_contain_text("127.0.0.1")
    laptop.fill("#token-name", "monitoring")
    laptop.fill("#token-days", "30")
    laptop.click("#token-form button[type=submit]")
    expect(laptop.locator("#secret-value")).to_contain_text("cst_")
    expect(laptop.locator("#token-rows")).to_contain_text("monitoring")
    laptop.screenshot(path=shots / "admin-05-sessions-tokens.png")
    # End the other browser's session: it is signed out at its next request.
    laptop.locator("#session-rows tr", has_not_text="this browser").locator(
        "button[data-end]").click()
    expect(laptop.locator("#message")).to_have_text("session ended")
    expect(rows).to_have_count(1)
    other.goto(site.url + "/timeline")
    other.wait_for_url("**/login?next=%2Ftimeline")
    assert [t[0] for t in audited(site.node, Action.SESSION_END)] == ["olga"]
    laptop.context.close()
    other.context.close()


def test_place_and_release_a_hold_on_the_timeline(browser: Browser, site: Site,
                                                  shots: Path) -> None:
    page = sign_in(browser, site, "olga", target="/timeline")
    expect(page.locator("#hold-start")).not_to_have_value("")  # the detail window, prefilled
    now = time.time()
    page.fill("#hold-start", utc_input(now - 1800))
    page.fill("#hold-end", utc_input(now - 60))
    page.fill("#hold-reason", "incident in the corridor")
    page.click("#hold-place")
    expect(page.locator("#hold-message")).to_contain_text("placed on cam01")
    expect(page.locator("#hold-rows tr[data-hold]")).to_have_count(1)
    expect(page.locator("#daybar .held")).to_have_count(1)
    # The day bar's painting survives the timeline's own redraws (a zoom change).
    page.select_option("#zoom", "21600")
    expect(page.locator("#daybar .held")).to_have_count(1)
    page.screenshot(path=shots / "admin-06-hold-placed.png")
    # Another camera has no holds.
    page.select_option("#camera", "cam02")
    expect(page.locator("#hold-rows")).to_contain_text("No holds in force")
    expect(page.locator("#daybar .held")).to_have_count(0)
    page.select_option("#camera", "cam01")
    expect(page.locator("#hold-rows tr[data-hold]")).to_have_count(1)
    page.once("dialog", lambda d: d.accept("incident closed"))
    page.click("button[data-release]")
    expect(page.locator("#hold-message")).to_contain_text("released")
    expect(page.locator("#hold-rows tr[data-hold]")).to_have_count(0)
    expect(page.locator("#daybar .held")).to_have_count(0)
    assert [(a, o) for a, _, o in audited(site.node, Action.HOLD_ADD)] == [("olga", "ok")]
    assert [(a, o) for a, _, o in audited(site.node, Action.HOLD_RELEASE)] == [("olga", "ok")]
    page.context.close()
