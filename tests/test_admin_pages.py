"""Administration in the browser, at the API and page level: forced password changes, the
users and grants pages, one's own sessions and tokens, holds. Most tests are attacks: a
narrow role posting the administrators' forms, a form posted without its CSRF token, an
administrator trying to raise themselves through the page, a user who has not yet replaced a
password someone else saw calling the API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import insert, select
from typer.testing import CliRunner

from custodes.api.deps import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Permission, Role, can
from custodes.auth.sessions import MAX_TOKEN_DAYS
from custodes.auth.users import PASSWORD_FIRST, Users, ensure_admin
from custodes.commands.case import case_app
from custodes.config import load_config
from custodes.record.layout import Layout
from custodes.store import schema
from custodes.store.db import Store
from test_auth import (
    FAST_HASH,
    PASSWORD,
    add_user,
    audit_entries,
    client,
    get_users_of,
    make_app,
    node_config,
    open_node,
    signed_in,
)

NEW_PASSWORD = "a password of my own"
HTML = {"Accept": "text/html"}  # what a browser sends when it navigates


@pytest.fixture
def node(tmp_path: Path) -> Any:
    yield from open_node(tmp_path)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def sign_in(app: FastAPI, name: str, password: str) -> Any:
    c = client(app)
    r = c.post("/api/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    c.headers[CSRF_HEADER] = c.cookies[CSRF_COOKIE]
    return c


def change_password(c: Any, old: str, new: str = NEW_PASSWORD) -> None:
    r = c.post("/api/auth/password", json={"old_password": old, "new_password": new})
    assert r.status_code == 200, r.text
    c.headers[CSRF_HEADER] = c.cookies[CSRF_COOKIE]


# -- a password someone else saw is replaced first -----------------------------------------------


def test_the_first_administrator_must_choose_a_password_before_anything_else(
        app: FastAPI, node: Node) -> None:
    first = ensure_admin(node.store, node.audit)
    assert first is not None
    c = sign_in(app, "admin", first)
    me = c.get("/api/auth/me").json()
    assert me["must_change_password"] is True
    # Every API call but the change and sign-out is refused, with the reason, on the record.
    for method, path in (("GET", "/api/status"), ("GET", "/api/users"),
                         ("POST", "/api/auth/tokens"), ("GET", "/api/auth/sessions"),
                         ("POST", "/api/users")):
        r = c.request(method, path, json={"name": "x", "role": "viewer"}
                      if method == "POST" else None)
        assert (r.status_code, r.json()["detail"]) == (403, PASSWORD_FIRST), path
    assert "/account/password" in PASSWORD_FIRST
    # Pages redirect to the change, and come back afterwards.
    r = c.get("/users", follow_redirects=False, headers=HTML)
    assert r.status_code == 303
    assert r.headers["location"] == "/account/password?next=%2Fusers"
    assert c.get("/login", follow_redirects=False, headers=HTML).headers["location"].startswith(
        "/account/password")
    page = c.get("/account/password?next=%2Fusers")
    assert page.status_code == 200
    assert 'id="forced"' in page.text
    refused = [e for e in audit_entries(node, Action.ACCESS) if e["outcome"] == "refused"]
    assert len(refused) == 5
    assert all('"reason": "password change required"' in e["detail"] or
               "password change required" in str(e) for e in refused)
    change_password(c, first)
    assert c.get("/api/status").status_code == 200
    assert c.get("/api/auth/me").json()["must_change_password"] is False
    assert c.get("/users").status_code == 200
    assert 'id="forced"' not in c.get("/account/password").text
    # The old, console-printed password no longer signs anyone in.
    assert client(app).post("/api/auth/login", json={"name": "admin", "password": first}
                            ).status_code == 401


def test_new_accounts_and_resets_must_change_their_password(app: FastAPI) -> None:
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    password = root.post("/api/users", json={"name": "olga", "role": "operator"}).json()[
        "password"]
    olga = sign_in(app, "olga", password)
    assert olga.get("/api/status").status_code == 403
    # The new password must differ from the one handed over.
    r = olga.post("/api/auth/password", json={"old_password": password,
                                             "new_password": password})
    assert r.status_code == 400
    change_password(olga, password)
    assert olga.get("/api/status").status_code == 200
    users = {u["name"]: u for u in root.get("/api/users").json()}
    assert users["olga"]["must_change_password"] is False
    # A reset: the old sessions end, and the new password is again one to replace.
    reset = root.post("/api/users/olga/password").json()["password"]
    assert olga.get("/api/status").status_code == 401
    again = sign_in(app, "olga", reset)
    assert again.get("/api/events").status_code == 403
    assert root.get("/api/users/olga").json()["must_change_password"] is True
    change_password(again, reset)
    assert again.get("/api/events").status_code == 200


def test_a_token_of_a_user_who_must_change_the_password_opens_nothing(app: FastAPI) -> None:
    users = get_users_of(app)
    vera = users.add("vera", Role.VIEWER, PASSWORD, temporary=True)
    _, token = app.state.sessions.create_token(vera, "old script")
    bearer = client(app)
    bearer.headers["Authorization"] = f"Bearer {token}"
    r = bearer.get("/api/status")
    assert (r.status_code, r.json()["detail"]) == (403, PASSWORD_FIRST)
    assert bearer.get("/timeline", follow_redirects=False, headers=HTML).status_code == 303
    # A scraper is told why rather than sent to a page.
    assert bearer.get("/metrics").status_code == 403


# -- the administrators' pages: who may, and what the page cannot get round ----------------------


def test_narrow_roles_cannot_use_the_administration_pages_or_post_their_forms(
        app: FastAPI, node: Node) -> None:
    add_user(app, "root", Role.ADMIN)
    for role in (Role.VIEWER, Role.OPERATOR, Role.INVESTIGATOR, Role.APPROVER, Role.INSPECTOR):
        c = signed_in(app, add_user(app, f"u-{role.value}", role))
        for page in ("/users", "/users/grants"):
            r = c.get(page)
            assert r.status_code == 403, (role, page)
            assert "users.manage" in r.text
        assert "/users" not in c.get("/account").text.split("<main>")[0]  # no nav link
        # What the page's forms post, sent straight to the API.
        attempts = [
            c.post("/api/users", json={"name": f"evil-{role.value}", "role": "viewer"}),
            c.patch("/api/users/root", json={"disabled": True}),
            c.patch(f"/api/users/u-{role.value}", json={"role": "admin"}),
            c.post("/api/users/root/password"),
            c.post("/api/grants/1/confirm"),
            c.post("/api/grants/1/cancel"),
        ]
        assert [r.status_code for r in attempts] == [403] * 6, (role, [r.text for r in attempts])
    users = get_users_of(app)
    assert not [u.name for u in users.list() if u.name.startswith("evil-")]
    assert users.get("root").disabled is False  # type: ignore[union-attr]
    refused = [e for e in audit_entries(node) if e["outcome"] == "refused"]
    assert len(refused) >= 5 * 8


def test_forms_posted_without_the_csrf_token_are_refused(app: FastAPI, node: Node) -> None:
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    vic = add_user(app, "vic", Role.VIEWER)
    for c in (root, olga):
        del c.headers[CSRF_HEADER]
    now = time.time()
    attempts = [
        root.post("/api/users", json={"name": "mallory", "role": "viewer"}),
        root.patch("/api/users/vic", json={"disabled": True}),
        root.post("/api/users/vic/password"),
        root.post("/api/auth/tokens", json={"name": "x", "days": 1}),
        olga.post("/api/holds", json={"camera": "cam1", "start": now - 60, "end": now,
                                      "reason": "incident"}),
        olga.post("/api/auth/password", json={"old_password": PASSWORD,
                                              "new_password": NEW_PASSWORD}),
    ]
    for r in attempts:
        assert r.status_code == 403, r.text
        assert "CSRF" in r.json()["detail"]
    # A wrong token (another session's) is no better.
    other = signed_in(app, add_user(app, "ada", Role.ADMIN)).headers[CSRF_HEADER]
    r = root.post("/api/users", json={"name": "mallory", "role": "viewer"},
                  headers={CSRF_HEADER: other})
    assert r.status_code == 403
    users = get_users_of(app)
    assert users.get("mallory") is None
    assert users.get("vic") == vic
    with node.store.read() as conn:
        assert conn.execute(select(schema.holds)).first() is None
        assert conn.execute(select(schema.api_tokens)).first() is None


def test_an_administrator_cannot_raise_themselves_through_the_page(
        app: FastAPI, node: Node) -> None:
    users = get_users_of(app)
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    ada = signed_in(app, add_user(app, "ada", Role.ADMIN))
    page = root.get("/users").text
    assert 'id="add-form"' in page
    # Their own role, whichever way the form is sent.
    for role in ("investigator", "approver", "operator"):
        r = root.patch("/api/users/root", json={"role": role})
        assert (r.status_code, r.json()["detail"]) == (403, "nobody may change their own role")
    # A second account for themselves with a privileged role only waits for another admin...
    r = root.post("/api/users", json={"name": "root2", "role": "investigator"})
    assert r.status_code == 202
    grant = r.json()["grant"]["id"]
    assert users.get("root2") is None
    # ...which they cannot confirm themselves.
    r = root.post(f"/api/grants/{grant}/confirm")
    assert r.status_code == 403
    assert "different administrator" in r.json()["detail"]
    # Nor reset their own (privileged) password to learn a new one.
    r = root.post("/api/users/root/password")
    assert r.status_code == 403
    # The grants page lists the grant; the second administrator may refuse it.
    assert ada.get("/users/grants").status_code == 200
    [pending] = ada.get("/api/grants?pending=true").json()
    assert (pending["id"], pending["requested_by"]) == (grant, "root")
    assert ada.post(f"/api/grants/{grant}/cancel").json()["status"] == "cancelled"
    assert ada.post(f"/api/grants/{grant}/confirm").status_code == 403
    assert users.get("root2") is None
    # An administrator watches as a viewer does, but nothing more: no originals, no export, no
    # holds, no faces.
    assert can(Role.ADMIN, Permission.PLAYBACK_REDACTED)
    for p in (Permission.PLAYBACK_UNREDACTED, Permission.EXPORT, Permission.HOLDS_MANAGE,
              Permission.FACE_SEARCH, Permission.CASE_VIEW, Permission.GALLERY_MANAGE):
        assert not can(Role.ADMIN, p), p
    now = time.time()
    r = root.post("/api/holds", json={"camera": "cam1", "start": now - 60, "end": now,
                                      "reason": "x"})
    assert r.status_code == 403
    assert root.get("/timeline").status_code == 200
    assert 'id="hold-form"' not in root.get("/timeline").text


def test_the_grants_list_is_filtered_by_user_camera_kind_and_state(
        app: FastAPI, node: Node) -> None:
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    ada = signed_in(app, add_user(app, "ada", Role.ADMIN))
    add_user(app, "dora", Role.APPROVER, ["cam2"])
    ivan = root.post("/api/users", json={"name": "ivan", "role": "investigator",
                                         "cameras": ["cam1"]}).json()["grant"]["id"]
    anna = root.post("/api/users", json={"name": "anna", "role": "approver"}).json()[
        "grant"]["id"]  # every camera
    reset = ada.post("/api/users/dora/password").json()["grant"]["id"]
    assert ada.post(f"/api/grants/{ivan}/confirm").status_code == 200
    # A grant nobody confirmed in time reads "expired" (the row itself still says pending).
    now = time.time()
    node.store.write(lambda conn: conn.execute(insert(schema.user_grants).values(
        kind="add", user_name="old", role="admin", cameras=None, requested_by="cli:root",
        requested_at=now - 9 * 86400, expires_at=now - 2 * 86400, status="pending")))

    def ids(**query: str) -> list[int]:
        r = ada.get("/api/grants", params=query)
        assert r.status_code == 200, r.text
        return [g["id"] for g in r.json()]

    lapsed = max(ids())
    assert ids() == [lapsed, reset, anna, ivan]
    # A user: the account concerned, who asked, or who decided.
    assert ids(user="ivan") == [ivan]
    assert ids(user="root") == [anna, ivan]
    assert ids(user="ada") == [reset, ivan]
    assert ids(user="cli:root") == [lapsed]
    assert ids(user="nobody") == []
    # A camera: grants limited to it, and those for every camera (a password reset names no
    # camera, so it is listed under each).
    assert ids(camera="cam1") == [lapsed, reset, anna, ivan]
    assert ids(camera="cam2") == [lapsed, reset, anna]
    assert ids(kind="password") == [reset]
    assert ids(kind="add", camera="cam2") == [lapsed, anna]
    assert ids(status="confirmed") == [ivan]
    assert ids(status="pending") == ids(pending="true") == [reset, anna]
    assert ids(status="expired") == [lapsed]
    assert ids(status="pending", user="root") == [anna]
    # Bad filters are 4xx with a reason, never a 500 or a silently wider list.
    for bad in ({"kind": "everything"}, {"status": "done"}, {"camera": "../cam1"},
                {"user": ""}, {"user": "x" * 129}):
        assert ada.get("/api/grants", params=bad).status_code == 422, bad
    r = ada.get("/api/grants", params={"pending": "true", "status": "confirmed"})
    assert r.status_code == 400
    assert "two states" in r.json()["detail"]
    # The page offers the same choices.
    page = ada.get("/users/grants").text
    assert 'id="grant-filters"' in page
    assert '<option value="cam2">cam2</option>' in page
    assert '<option value="password">password reset</option>' in page
    assert '<option value="expired">expired</option>' in page


# -- one's own sessions and tokens ----------------------------------------------------------------


def test_sessions_are_listed_with_where_they_were_used_and_can_be_ended(
        app: FastAPI, node: Node) -> None:
    add_user(app, "olga", Role.OPERATOR)
    laptop = sign_in(app, "olga", PASSWORD)
    phone = client(app, ("127.0.0.7", 40000))
    phone.headers["User-Agent"] = "Mozilla/5.0 (Linux; Android 14) Chrome/130.0"
    assert phone.post("/api/auth/login", json={"name": "olga", "password": PASSWORD}
                      ).status_code == 200
    listed = laptop.get("/api/auth/sessions").json()
    assert len(listed) == 2
    [mine] = [s for s in listed if s["current"]]
    [other] = [s for s in listed if not s["current"]]
    assert other["address"] == "127.0.0.7"
    assert "Android" in other["user_agent"]
    assert other["last_used_at"] is not None
    assert len(other["id"]) == 24
    # Neither the cookie nor its hash is shown.
    with node.store.read() as conn:
        hashes = conn.execute(select(schema.sessions.c.token_hash)).scalars().all()
    assert not any(h in str(listed) for h in hashes)
    assert phone.cookies[SESSION_COOKIE] not in str(listed)
    # Ending the other one signs that browser out; someone else's session is not found.
    vic = signed_in(app, add_user(app, "vic", Role.VIEWER))
    assert vic.delete(f"/api/auth/sessions/{other['id']}").status_code == 404
    assert phone.get("/api/auth/me").status_code == 200
    assert laptop.delete(f"/api/auth/sessions/{other['id']}").status_code == 200
    assert phone.get("/api/auth/me").status_code == 401
    assert laptop.get("/api/auth/me").status_code == 200
    assert laptop.delete("/api/auth/sessions/not-an-id").status_code == 422
    [entry] = audit_entries(node, Action.SESSION_END)
    assert (entry["actor"], entry["target"]) == ("olga", other["id"])
    # Ending one's own signs out here.
    assert laptop.delete(f"/api/auth/sessions/{mine['id']}").status_code == 200
    assert laptop.get("/api/auth/me").status_code == 401


def test_last_use_of_a_session_and_a_token_is_kept(app: FastAPI, node: Node) -> None:
    vera = add_user(app, "vera", Role.VIEWER)
    c = signed_in(app, vera)
    token_id, token = app.state.sessions.create_token(vera, "script")
    bearer = client(app, ("127.0.0.9", 40000))
    assert bearer.get("/api/status", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    [t] = c.get("/api/auth/tokens").json()
    assert (t["id"], t["last_address"]) == (token_id, "127.0.0.9")
    assert t["last_used_at"] is not None
    # Written at most once a minute: a second call within it does not write again.
    with node.store.read() as conn:
        before = conn.execute(select(schema.api_tokens.c.last_used_at)).scalar_one()
    bearer.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    with node.store.read() as conn:
        assert conn.execute(select(schema.api_tokens.c.last_used_at)).scalar_one() == before


def test_tokens_made_from_the_page_have_a_bounded_lifetime(app: FastAPI) -> None:
    c = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    r = c.post("/api/auth/tokens", json={"name": "forever", "days": MAX_TOKEN_DAYS + 1})
    assert r.status_code == 422
    r = c.post("/api/auth/tokens", json={"name": "default"})
    assert r.status_code == 201
    [t] = c.get("/api/auth/tokens").json()
    assert t["expires_at"] is not None
    assert t["expires_at"] - t["created_at"] <= MAX_TOKEN_DAYS * 86400
    page = c.get("/account").text
    assert 'id="token-form"' in page
    assert f'max="{MAX_TOKEN_DAYS}"' in page


# -- holds ----------------------------------------------------------------------------------------


def test_holds_are_placed_listed_and_released_under_the_rules(app: FastAPI, node: Node) -> None:
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    cleo = signed_in(app, add_user(app, "cleo", Role.OPERATOR, ["cam2"]))
    vic = signed_in(app, add_user(app, "vic", Role.VIEWER))
    now = time.time()
    body = {"camera": "cam1", "start": now - 600, "end": now - 60, "reason": "incident 42"}
    r = olga.post("/api/holds", json=body)
    assert r.status_code == 201, r.text
    hold = r.json()
    assert (hold["camera"], hold["created_by"], hold["case"]) == ("cam1", "olga", None)
    assert [h["id"] for h in olga.get("/api/holds?camera=cam1").json()] == [hold["id"]]
    assert olga.get("/api/holds?camera=cam2").json() == []
    # A role without holds.manage, and a camera outside one's cameras, are refused.
    assert vic.post("/api/holds", json=body).status_code == 403
    assert vic.get("/api/holds").status_code == 403
    r = cleo.post("/api/holds", json=body)
    assert r.status_code == 403
    assert cleo.get("/api/holds").json() == []  # cam1's hold (and its reason) not shown
    assert cleo.post(f"/api/holds/{hold['id']}/release", json={}).status_code == 403
    # Bad input gets a reason.
    for bad, status in (({**body, "end": body["start"]}, 400),
                        ({**body, "start": now - 40 * 86400}, 400),
                        ({**body, "start": now + 3600, "end": now + 7200}, 400),
                        ({**body, "reason": "  "}, 400),
                        ({**body, "reason": ""}, 422),
                        ({**body, "camera": "nope"}, 404),
                        ({**body, "expires_at": now - 1}, 400),
                        ({**body, "extra": 1}, 422)):
        r = olga.post("/api/holds", json=bad)
        assert r.status_code == status, (bad, r.text)
    # A hold a case's approval placed ends with the case, not by hand.
    case_hold = _case_hold(node, now)
    r = olga.post(f"/api/holds/{case_hold}/release", json={"note": "tidy up"})
    assert r.status_code == 403
    assert "belongs to case" in r.json()["detail"]
    # Release: audited with the note, then no longer in force (twice: 409; unknown: 404).
    r = olga.post(f"/api/holds/{hold['id']}/release", json={"note": "incident closed"})
    assert r.status_code == 200, r.text
    assert r.json()["released_by"] == "olga"
    assert olga.post(f"/api/holds/{hold['id']}/release", json={}).status_code == 409
    assert olga.post("/api/holds/999/release", json={}).status_code == 404
    assert [h["id"] for h in olga.get("/api/holds").json()] == [case_hold]
    added = audit_entries(node, Action.HOLD_ADD)
    assert [(e["actor"], e["outcome"]) for e in added][:1] == [("olga", "ok")]
    assert ("cleo", "cam1", "refused") in [(e["actor"], e["target"], e["outcome"])
                                           for e in audit_entries(node, Action.CAMERA_ACCESS)]
    released = audit_entries(node, Action.HOLD_RELEASE)
    assert [(e["actor"], e["outcome"]) for e in released] == [
        ("cleo", "refused"), ("olga", "refused"), ("olga", "ok")]
    assert "incident closed" in released[-1]["detail"]
    # The timeline page offers the form only to those who may hold.
    assert 'id="hold-form"' in olga.get("/timeline").text
    assert 'id="hold-form"' not in vic.get("/timeline").text


def _case_hold(node: Node, now: float) -> int:
    """A hold as an approved case places it (custodes.privacy.cases), straight in the tables."""
    def write(conn: Any) -> int:
        case_id = conn.execute(insert(schema.cases).values(
            reference="case 1", legal_basis="test", purpose="test", cameras='["cam1"]',
            scope_start=now - 3600, scope_end=now, watchlist=0, opened_by="ivan",
            opened_at=now, status="approved", decided_by="dora", decided_at=now,
            expires_at=now + 86400).returning(schema.cases.c.id)).scalar_one()
        hold_id = conn.execute(insert(schema.holds).values(
            camera="cam1", start=now - 3600, end=now, reason="case 1", created_at=now,
            created_by="dora", expires_at=now + 86400).returning(schema.holds.c.id)).scalar_one()
        conn.execute(insert(schema.case_holds).values(case_id=case_id, hold_id=hold_id))
        return int(hold_id)

    return int(node.store.write(write))


def test_the_command_line_also_wants_the_password_changed_first(tmp_path: Path) -> None:
    """Commands that act as a user (``case``, ``gallery``) refuse a password someone else saw,
    as the web does."""
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node_config(tmp_path)))
    with Store(Layout(load_config(path).storage.path).database) as store:
        users = Users(store, FAST_HASH)
        users.add("ivan", Role.INVESTIGATOR, PASSWORD, temporary=True)
        users.add("iris", Role.INVESTIGATOR, PASSWORD)
    runner = CliRunner()
    result = runner.invoke(case_app, ["list", "--config", str(path), "--user", "ivan"],
                           env={"CUSTODES_PASSWORD": PASSWORD})
    assert result.exit_code == 3, result.output
    assert "choose your own on /account/password" in " ".join(result.output.split())
    result = runner.invoke(case_app, ["list", "--config", str(path), "--user", "iris"],
                           env={"CUSTODES_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
