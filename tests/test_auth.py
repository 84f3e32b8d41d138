"""Users, sign-in, sessions, API tokens, throttling, errors and metrics, through the real API.

The node is built on a temporary config and only its database is opened: no camera runs. The
helpers at the top are shared with test_api_security.py and test_api_fuzz.py.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from custodes.analytics.worker import Stats
from custodes.api.app import create_app
from custodes.api.deps import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.audit.report import inspection_facts
from custodes.auth.grants import Accounts
from custodes.auth.roles import Actor, Role
from custodes.auth.throttle import LoginThrottle, Throttle
from custodes.auth.users import ADMIN, User, UserError, Users, ensure_admin
from custodes.commands.user import user_app
from custodes.config import ServerConfig, parse_config
from custodes.store import schema

with warnings.catch_warnings():
    # Starlette deprecates driving its test client with httpx; the replacement is not installed.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

LOCAL = ("127.0.0.1", 50000)
PASSWORD = "correct horse battery"  # test users' password (12+ characters)
FAST_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def node_config(root: Path, **server: Any) -> dict[str, Any]:
    return {
        "profile": "police",  # the profile that allows the most: routes refuse by role only
        # Days and times in UTC whatever the machine's zone (the default), as the tests expect.
        "node": {"timezone": "UTC"},
        "sites": {"site": {"name": "Test site"}},
        "cameras": {
            name: {"site": "site", "location": "corridor", "purpose": "test camera",
                   "main_url": f"rtsp://user:secret@127.0.0.1:1/{name}"}
            for name in ("cam1", "cam2")
        },
        "storage": {"path": str(root / "var")},
        "server": server,
    }


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from open_node(tmp_path)


def open_node(tmp_path: Path, **server: Any) -> Iterator[Node]:
    yield from opened(Node(parse_config(yaml.safe_dump(node_config(tmp_path, **server)))))


def opened(node: Node) -> Iterator[Node]:
    """``node`` with its folders made and its database open, no worker running (the API is
    called in-process); closed after use."""
    node.layout.create()
    node.store.open()
    try:
        yield node
    finally:
        node.store.close()


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def make_app(node: Node) -> FastAPI:
    """The node's app, hashing passwords at a test cost (the tests create many users)."""
    app = create_app(node)
    app.state.users = Users(node.store, FAST_HASH)
    return app


def client(app: FastAPI, address: tuple[str, int] = LOCAL) -> TestClient:
    return TestClient(app, client=address)


def add_user(app: FastAPI, name: str, role: Role, cameras: list[str] | None = None) -> User:
    return get_users_of(app).add(name, role, PASSWORD, cameras)


def get_users_of(app: FastAPI) -> Users:
    users: Users = app.state.users
    return users


def signed_in(app: FastAPI, user: User) -> TestClient:
    """A client with a fresh cookie session of ``user`` and its CSRF header (no argon2 cost)."""
    session = app.state.sessions.create(user, "127.0.0.1")
    c = client(app)
    c.cookies.set(SESSION_COOKIE, session.token, domain="testserver.local")
    c.headers[CSRF_HEADER] = session.csrf
    return c


def audit_entries(node: Node, action: Action | None = None) -> list[dict[str, Any]]:
    log = schema.audit_log
    query = select(log).order_by(log.c.seq)
    if action is not None:
        query = query.where(log.c.action == action.value)
    with node.store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


# -- users --------------------------------------------------------------------------------


def test_first_run_creates_admin_with_a_random_password_once(node: Node) -> None:
    password = ensure_admin(node.store, node.audit)
    assert password is not None
    assert len(password) >= 16
    assert ensure_admin(node.store, node.audit) is None
    users = Users(node.store)
    admin = users.authenticate(ADMIN, password)
    assert admin is not None
    assert admin.role is Role.ADMIN
    with node.store.read() as conn:
        stored = conn.execute(select(schema.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert password not in stored
    [entry] = audit_entries(node, Action.USER_ADD)
    assert entry["target"] == ADMIN
    assert password not in entry["detail"]
    # Another node gets another password: there are no default credentials.
    assert users.authenticate(ADMIN, "admin") is None


def test_passwords_are_checked_and_rehashed_when_parameters_change(node: Node) -> None:
    users = Users(node.store)
    with pytest.raises(UserError, match="at least 12"):
        users.add("short", Role.VIEWER, "x" * 11)
    with pytest.raises(UserError, match="user name"):
        users.add("Bad Name", Role.VIEWER, PASSWORD)
    users.add("vera", Role.VIEWER, PASSWORD)
    with pytest.raises(UserError, match="exists"):
        users.add("vera", Role.VIEWER, PASSWORD)
    assert users.authenticate("vera", PASSWORD + "x") is None
    assert users.authenticate("nobody", PASSWORD) is None
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    node.store.write(lambda conn: conn.execute(
        update(schema.users).where(schema.users.c.name == "vera").values(password_hash=weak)
    ))
    assert users.authenticate("vera", PASSWORD) is not None
    with node.store.read() as conn:
        rehashed = conn.execute(select(schema.users.c.password_hash)
                                .where(schema.users.c.name == "vera")).scalar_one()
    assert rehashed != weak
    assert not PasswordHasher().check_needs_rehash(rehashed)


def test_disabled_users_cannot_sign_in_and_the_last_admin_stays(node: Node) -> None:
    users = Users(node.store)
    users.add("root", Role.ADMIN, PASSWORD)
    users.add("vera", Role.VIEWER, PASSWORD)
    users.update("vera", disabled=True)
    assert users.authenticate("vera", PASSWORD) is None
    with pytest.raises(UserError, match="no enabled administrator"):
        users.update("root", role=Role.VIEWER)
    with pytest.raises(UserError, match="no enabled administrator"):
        users.update("root", disabled=True)
    root = users.get("root")
    assert root is not None
    assert root.role is Role.ADMIN
    assert not root.disabled


# -- throttling ---------------------------------------------------------------------------


def test_throttle_locks_out_exponentially_and_forgets() -> None:
    now = [1000.0]
    throttle = Throttle(5, base=30, ceiling=3600, forget=3600, clock=lambda: now[0])
    for _ in range(4):
        assert throttle.failed("vera") == 0
    assert throttle.retry_after("vera") == 0
    assert throttle.failed("vera") == 30
    assert throttle.retry_after("vera") == 30
    assert throttle.failed("vera") == 60
    assert throttle.failed("vera") == 120
    for _ in range(10):
        lock = throttle.failed("vera")
    assert lock == 3600
    now[0] += 3600
    assert throttle.retry_after("vera") == 0
    now[0] += 3601  # quiet for longer than `forget`: the count starts again
    assert throttle.failed("vera") == 0
    throttle.succeeded("vera")
    assert throttle.retry_after("vera") == 0


# -- signing in ---------------------------------------------------------------------------


def test_login_sets_strict_httponly_cookies_and_is_audited(app: FastAPI, node: Node) -> None:
    add_user(app, "vera", Role.VIEWER)
    c = client(app)
    assert c.get("/api/auth/me").json() == {"detail": "sign in first"}
    r = c.post("/api/auth/login", json={"name": "vera", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer"
    assert "live.view" in r.json()["permissions"]
    cookies = {h.split("=", 1)[0]: h for h in r.headers.get_list("set-cookie")}
    session = cookies[SESSION_COOKIE]
    assert "HttpOnly" in session
    assert "SameSite=strict" in session
    assert "Path=/" in session
    assert "Secure" not in session  # no TLS configured
    assert "HttpOnly" not in cookies[CSRF_COOKIE]
    assert r.json()["csrf"] == c.cookies[CSRF_COOKIE]
    assert c.get("/api/auth/me").json()["name"] == "vera"
    # The database holds the session's hash, not the cookie value.
    with node.store.read() as conn:
        stored = conn.execute(select(schema.sessions.c.token_hash)).scalar_one()
    assert stored != c.cookies[SESSION_COOKIE]

    bad = client(app).post("/api/auth/login", json={"name": "vera", "password": "wrong!"})
    assert bad.status_code == 401
    assert bad.json() == {"detail": "wrong name or password"}
    logins = audit_entries(node, Action.LOGIN)
    assert [(e["actor"], e["target"], e["outcome"]) for e in logins] == [
        ("vera", "vera", "ok"), ("anonymous", "vera", "failed"),
    ]
    assert logins[1]["address"] == "127.0.0.1"
    assert "wrong!" not in logins[1]["detail"]


def test_secure_cookies_when_tls_is_configured(tmp_path: Path) -> None:
    for node in open_node(tmp_path, tls_cert=str(tmp_path / "c.pem"),
                          tls_key=str(tmp_path / "k.pem")):
        app = make_app(node)
        add_user(app, "vera", Role.VIEWER)
        r = client(app).post("/api/auth/login", json={"name": "vera", "password": PASSWORD})
        assert all("Secure" in h for h in r.headers.get_list("set-cookie"))


def test_login_is_throttled_per_account_and_address_and_per_address(app: FastAPI,
                                                                    node: Node) -> None:
    add_user(app, "vera", Role.VIEWER)
    attacker = client(app, ("127.0.0.66", 1))
    for _ in range(5):
        assert attacker.post("/api/auth/login", json={"name": "vera",
                                                      "password": "guess-guess-guess"}
                             ).status_code == 401
    r = attacker.post("/api/auth/login", json={"name": "vera", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    # The attack of item 18: failing vera's password five times must not lock vera out. Her
    # own machine signs her in; only the guessing address is locked.
    assert client(app).post("/api/auth/login",
                            json={"name": "vera", "password": PASSWORD}).status_code == 200
    # A restart (a new app on the same database) keeps the guessing address locked.
    restarted = make_app(node)
    again = client(restarted, ("127.0.0.66", 1))
    assert again.post("/api/auth/login",
                      json={"name": "vera", "password": PASSWORD}).status_code == 429
    assert client(restarted).post("/api/auth/login",
                                  json={"name": "vera", "password": PASSWORD}).status_code == 200
    refused = [e for e in audit_entries(node, Action.LOGIN) if e["outcome"] == "refused"]
    assert len(refused) == 2
    assert json.loads(refused[0]["detail"]) == {"reason": "throttled"}
    assert {e["address"] for e in refused} == {"127.0.0.66"}
    # One address guessing many names is stopped too (after 20 failures by default; 8 here,
    # to spare the test a dozen argon2 verifications).
    app.state.throttle = LoginThrottle(Throttle(5), Throttle(8))
    spray = client(app, ("127.0.0.3", 1))
    codes = [spray.post("/api/auth/login", json={"name": f"user{i}", "password": "x"})
             .status_code for i in range(9)]
    assert codes == [401] * 8 + [429]


def test_logout_ends_the_session_on_the_server(app: FastAPI) -> None:
    c = signed_in(app, add_user(app, "vera", Role.VIEWER))
    token = c.cookies[SESSION_COOKIE]
    assert c.post("/api/auth/logout").status_code == 200
    replay = client(app)
    replay.cookies.set(SESSION_COOKIE, token)
    assert replay.get("/api/auth/me").status_code == 401


def test_password_change(app: FastAPI, node: Node) -> None:
    vera = add_user(app, "vera", Role.VIEWER)
    c, other = signed_in(app, vera), signed_in(app, vera)
    _, token = get_sessions_of(app).create_token(vera, "script")
    r = c.post("/api/auth/password", json={"old_password": "wrong-password", "new_password":
                                           "another good password"})
    assert r.status_code == 403
    r = c.post("/api/auth/password", json={"old_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422
    old_cookie = c.cookies[SESSION_COOKIE]
    r = c.post("/api/auth/password", json={"old_password": PASSWORD,
                                           "new_password": "another good password"})
    assert r.status_code == 200, r.text
    assert c.cookies[SESSION_COOKIE] != old_cookie  # a fresh session for this browser
    c.headers[CSRF_HEADER] = c.cookies[CSRF_COOKIE]
    assert c.get("/api/auth/me").status_code == 200
    assert other.get("/api/auth/me").status_code == 401  # every other session ended
    bearer = client(app)
    assert bearer.get("/api/auth/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert Users(node.store).authenticate("vera", "another good password") is not None
    assert [e["outcome"] for e in audit_entries(node, Action.USER_PASSWORD)] == ["failed", "ok"]


def get_sessions_of(app: FastAPI) -> Any:
    return app.state.sessions


def test_api_tokens_are_shown_once_stored_hashed_and_revocable(app: FastAPI,
                                                               node: Node) -> None:
    c = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    r = c.post("/api/auth/tokens", json={"name": "prometheus"})
    assert r.status_code == 201, r.text
    token, token_id = r.json()["token"], r.json()["id"]
    assert token.startswith("cst_")
    listed = c.get("/api/auth/tokens").json()
    assert [t["name"] for t in listed] == ["prometheus"]
    assert "token" not in listed[0]
    with node.store.read() as conn:
        assert token not in str(conn.execute(select(schema.api_tokens)).all())
    bearer = client(app)
    bearer.headers["Authorization"] = f"Bearer {token}"
    assert bearer.get("/api/auth/me").json()["name"] == "olga"
    assert bearer.get("/metrics").status_code == 200
    assert c.delete(f"/api/auth/tokens/{token_id}").status_code == 200
    assert c.delete(f"/api/auth/tokens/{token_id}").status_code == 404
    r = bearer.get("/api/auth/me")
    assert r.status_code == 401
    assert "not valid" in r.json()["detail"]
    assert client(app).get("/api/auth/me", headers={"Authorization": "Basic abc"}
                           ).status_code == 401


# -- users over the API ---------------------------------------------------------------------


def test_admin_manages_users_with_random_passwords(app: FastAPI, node: Node) -> None:
    admin = signed_in(app, add_user(app, "root", Role.ADMIN))
    r = admin.post("/api/users", json={"name": "olga", "role": "operator", "cameras": ["cam1"]})
    assert r.status_code == 201, r.text
    password = r.json()["password"]
    assert admin.post("/api/users", json={"name": "olga", "role": "viewer"}).status_code == 409
    assert admin.post("/api/users", json={"name": "x", "role": "viewer",
                                          "cameras": ["nope"]}).status_code == 400
    olga = client(app)
    assert olga.post("/api/auth/login",
                     json={"name": "olga", "password": password}).status_code == 200
    # The administrator saw that password: olga must choose her own before anything else.
    assert olga.get("/api/status").status_code == 403
    olga.headers[CSRF_HEADER] = olga.cookies[CSRF_COOKIE]
    assert olga.post("/api/auth/password", json={
        "old_password": password, "new_password": "olga's own password"}).status_code == 200
    olga.headers[CSRF_HEADER] = olga.cookies[CSRF_COOKIE]
    assert [c["name"] for c in olga.get("/api/status").json()["cameras"]] == ["cam1"]
    assert admin.patch("/api/users/olga", json={"cameras": None}).json()["cameras"] is None
    assert len(olga.get("/api/status").json()["cameras"]) == 2  # takes effect at once
    r = admin.patch("/api/users/root", json={"role": "viewer"})
    assert (r.status_code, r.json()["detail"]) == (403, "nobody may change their own role")
    r = admin.post("/api/users/olga/password")
    assert r.status_code == 200
    assert r.json()["password"] != password
    assert olga.get("/api/auth/me").status_code == 401  # the reset ended her session
    assert admin.patch("/api/users/olga", json={"disabled": True}).json()["disabled"] is True
    assert admin.get("/api/users/nobody").status_code == 404
    assert [u["name"] for u in admin.get("/api/users").json()] == ["olga", "root"]
    actions = [(e["action"], e["outcome"]) for e in audit_entries(node) if e["actor"] == "root"]
    assert actions == [("user.add", "ok"), ("user.update", "ok"), ("user.update", "refused"),
                       ("user.reset_password", "ok"), ("user.update", "ok")]


def test_one_administrator_alone_cannot_make_the_two_sides_of_a_case(
        app: FastAPI, node: Node) -> None:
    """The attack: an administrator makes an investigator and an approver (or takes those
    roles, or resets the approver's password) to open, approve and search a case alone."""
    users = get_users_of(app)
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    add_user(app, "ada", Role.ADMIN)  # a second administrator
    add_user(app, "olga", Role.OPERATOR)
    add_user(app, "dora", Role.APPROVER)

    # A new investigator or approver is not made: a grant waits for a second administrator.
    r = root.post("/api/users", json={"name": "ivan", "role": "investigator"})
    assert r.status_code == 202, r.text
    assert "password" not in r.json()
    ivan_grant = r.json()["grant"]
    assert (ivan_grant["status"], ivan_grant["requested_by"]) == ("pending", "root")
    assert users.get("ivan") is None
    r = root.post(f"/api/grants/{ivan_grant['id']}/confirm")
    assert (r.status_code, r.json()["detail"]) == (403, "a grant must be confirmed by a "
                                                        "different administrator than the one "
                                                        "who asked for it")
    # An existing account given a privileged role: the same.
    r = root.patch("/api/users/olga", json={"role": "approver"})
    assert (r.status_code, r.json()["role"]) == (202, "operator")
    assert users.get("olga").role is Role.OPERATOR  # type: ignore[union-attr]
    # Nobody changes their own role, up or down.
    for role in ("investigator", "approver", "viewer"):
        r = root.patch("/api/users/root", json={"role": role})
        assert (r.status_code, r.json()["detail"]) == (403, "nobody may change their own role")
    assert users.get("root").role is Role.ADMIN  # type: ignore[union-attr]
    # The approver's password is not handed to the administrator who asks for it.
    r = root.post("/api/users/dora/password")
    assert r.status_code == 202
    assert "password" not in r.json()
    assert users.authenticate("dora", PASSWORD) is not None  # unchanged
    dora_grant = r.json()["grant"]["id"]
    # A second administrator confirms; the password goes to them, once.
    ada = signed_in(app, users.get("ada"))  # type: ignore[arg-type]
    r = ada.post(f"/api/grants/{dora_grant}/confirm")
    assert r.status_code == 200, r.text
    assert users.authenticate("dora", PASSWORD) is None
    assert users.authenticate("dora", r.json()["password"]) is not None
    assert ada.post(f"/api/grants/{dora_grant}/confirm").json()["detail"] == (
        "the grant is confirmed")
    assert ada.post(f"/api/grants/{ivan_grant['id']}/confirm").status_code == 200
    assert users.get("ivan").role is Role.INVESTIGATOR  # type: ignore[union-attr]
    # Nobody confirms a grant to themselves.
    r = root.patch("/api/users/ada", json={"role": "investigator"})
    assert r.status_code == 202
    r = ada.post(f"/api/grants/{r.json()['grant']['id']}/confirm")
    assert (r.status_code, r.json()["detail"]) == (403, "nobody may confirm a grant to "
                                                        "themselves")
    # A user without users.manage confirms nothing; a grant that does not exist is a 404.
    viewer = signed_in(app, add_user(app, "vic", Role.VIEWER))
    assert viewer.post(f"/api/grants/{dora_grant}/cancel").status_code == 403
    assert ada.post("/api/grants/999/confirm").status_code == 404
    # Every refusal is on the record, and the inspection pack flags what waits.
    refused = [(e["actor"], e["action"]) for e in audit_entries(node)
               if e["outcome"] == "refused"]
    assert ("root", "user.grant_confirm") in refused
    assert refused.count(("root", "user.update")) == 3
    assert ("ada", "user.grant_confirm") in refused
    duties = inspection_facts(node.config, node.store, node.keys, since=0)[
        "separation_of_duties"]
    assert [g["user"] for g in duties["grants"] if g["status"] == "pending"] == ["olga", "ada"]
    flags = " / ".join(duties["flags"])
    assert "asked by root is waiting for a second administrator" in flags
    # Accounts made straight in the database (as this test's set-up does) are flagged.
    assert "root holds the admin role without a grant" in flags


def test_a_confirmed_grant_makes_the_account(app: FastAPI, node: Node) -> None:
    users = get_users_of(app)
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    ada = signed_in(app, add_user(app, "ada", Role.ADMIN))
    grant = root.post("/api/users", json={"name": "ivan", "role": "investigator",
                                          "cameras": ["cam1"]}).json()["grant"]["id"]
    assert root.post("/api/users", json={"name": "ivan", "role": "approver"}).status_code == 409
    r = ada.post(f"/api/grants/{grant}/confirm")
    assert r.status_code == 200, r.text
    ivan = users.authenticate("ivan", r.json()["password"])
    assert ivan is not None
    assert (ivan.role, ivan.cameras) == (Role.INVESTIGATOR, frozenset({"cam1"}))
    # A grant can be withdrawn before it is confirmed; then it cannot be.
    other = root.patch("/api/users/ivan", json={"role": "approver"}).json()["grant"]["id"]
    assert ada.post(f"/api/grants/{other}/cancel").json()["status"] == "cancelled"
    assert ada.post(f"/api/grants/{other}/confirm").status_code == 403
    assert users.get("ivan").role is Role.INVESTIGATOR  # type: ignore[union-attr]
    listed = root.get("/api/grants").json()
    assert [(g["id"], g["status"], g["decided_by"]) for g in listed] == [
        (other, "cancelled", "ada"), (grant, "confirmed", "ada")]
    duties_flags = " / ".join(inspection_facts(node.config, node.store, node.keys, since=0)[
        "separation_of_duties"]["flags"])
    assert "ivan" not in duties_flags  # ivan's role came through a confirmed grant
    # A grant that can no longer be carried out (the name was taken meanwhile) grants nothing
    # and waits again.
    late = root.post("/api/users", json={"name": "paula", "role": "approver"}).json()
    assert root.post("/api/users", json={"name": "paula", "role": "viewer"}).status_code == 201
    r = ada.post(f"/api/grants/{late['grant']['id']}/confirm")
    assert (r.status_code, r.json()["detail"]) == (409, "a user named 'paula' exists already")
    assert users.get("paula").role is Role.VIEWER  # type: ignore[union-attr]
    assert [g["id"] for g in root.get("/api/grants?pending=true").json()] == [
        late["grant"]["id"]]


def test_user_command_line(tmp_path: Path) -> None:
    raw = node_config(tmp_path)
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    r = runner.invoke(user_app, ["add", "-c", str(config), "vera", "--role", "viewer",
                                 "--cameras", "cam1"])
    assert r.exit_code == 0, r.output
    password = r.output.split("password for vera: ", 1)[1].split()[0]
    r = runner.invoke(user_app, ["add", "-c", str(config), "x", "--role", "viewer",
                                 "--cameras", "nope"])
    assert r.exit_code == 2
    assert "unknown cameras: nope" in r.output
    r = runner.invoke(user_app, ["list", "-c", str(config)])
    assert "vera" in r.output
    assert "cam1" in r.output
    assert "enabled" in r.output
    assert runner.invoke(user_app, ["disable", "-c", str(config), "vera"]).exit_code == 0
    r = runner.invoke(user_app, ["reset-password", "-c", str(config), "vera"])
    assert r.exit_code == 0
    new_password = r.output.split("password for vera: ", 1)[1].split()[0]
    assert runner.invoke(user_app, ["reset-password", "-c", str(config), "nobody"]
                         ).exit_code == 2
    assert runner.invoke(user_app, ["enable", "-c", str(config), "vera"]).exit_code == 0
    for node in open_node(tmp_path):
        users = Users(node.store)
        assert users.authenticate("vera", password) is None
        assert users.authenticate("vera", new_password) is not None
        assert [e["action"] for e in audit_entries(node)] == [
            "user.add", "user.update", "user.reset_password", "user.update",
        ]


def test_the_command_line_is_bound_by_the_two_person_rule(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_config(tmp_path)))
    runner = CliRunner()
    r = runner.invoke(user_app, ["add", "-c", str(config), "ivan", "--role", "investigator"])
    assert r.exit_code == 0, r.output
    assert "grant 1: add ivan (investigator) waits for a second administrator" in r.output
    assert "password" not in r.output
    r = runner.invoke(user_app, ["confirm", "-c", str(config), "1"])
    assert r.exit_code == 3
    assert "confirmed by a different administrator" in r.output
    r = runner.invoke(user_app, ["grants", "-c", str(config)])
    assert "ivan" in r.output
    assert "pending" in r.output
    for node in open_node(tmp_path):
        users = Users(node.store)
        assert users.get("ivan") is None
        change = Accounts(users, node.audit).confirm(Actor("ada", Role.ADMIN), 1)
        assert change.password is not None
        assert users.authenticate("ivan", change.password) is not None


# -- errors, health, metrics ----------------------------------------------------------------


def test_unexpected_errors_are_json_with_an_id_and_no_traceback(
        app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    r = TestClient(app, client=LOCAL, raise_server_exceptions=False).get("/api/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["detail"] == "internal error"
    assert len(body["id"]) == 36
    assert "secret" not in r.text
    assert body["id"] in caplog.text
    assert "secret internals" in caplog.text
    bad = client(app).post("/api/auth/login", json={"name": 5})
    assert bad.status_code == 422
    assert isinstance(bad.json()["detail"], list)
    assert client(app).get("/api/nothing-here").json() == {"detail": "Not Found"}


def test_health_is_open_and_says_nothing_more(app: FastAPI) -> None:
    assert client(app).get("/api/health").json() == {"status": "ok"}
    assert client(app).get("/api/openapi.json").json()["info"]["title"] == "custodes"


def test_metrics(app: FastAPI, node: Node) -> None:
    import time  # noqa: PLC0415

    now = time.time()
    rows = [{"camera": "cam1", "start": now - 40 + 10 * i, "end": now - 30 + 10 * i,
             "duration": 10, "bytes": 500_000, "path": f"cam1/{i}.mp4"} for i in range(3)]
    passes = [{"at": now, "trigger": t, "segments": n, "bytes": n * 1000, "details": "{}"}
              for t, n in (("age", 4), ("age", 6), ("quota", 1))]
    node.store.write(lambda conn: (conn.execute(insert(schema.segments), rows),
                                   conn.execute(insert(schema.deletion_passes), passes)))
    node.events.stats["cam1"] = Stats("cam1", True, "", 4.5, 0.2, 0, 640, 360, stream_fps=15.0)
    text = signed_in(app, add_user(app, "vera", Role.VIEWER)).get("/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines['custodes_camera_bitrate_bps{camera="cam1"}'] == "400000"
    assert 9 <= float(lines['custodes_camera_segment_lag_seconds{camera="cam1"}']) <= 60
    assert 'custodes_camera_segment_lag_seconds{camera="cam2"}' not in lines  # no footage
    assert lines['custodes_camera_online{camera="cam1"}'] == "0"  # not recording here
    assert lines['custodes_camera_stream_fps{camera="cam1"}'] == "15"
    assert lines['custodes_camera_analysed_fps{camera="cam1"}'] == "4.5"
    assert lines['custodes_retention_deleted_segments_total{trigger="age"}'] == "10"
    assert lines['custodes_retention_deleted_bytes_total{trigger="quota"}'] == "1000"
    assert lines['custodes_retention_deleted_segments_total{trigger="emergency"}'] == "0"
    assert int(lines["custodes_disk_free_bytes"]) > 0
    # A user limited to cam2 sees nothing of cam1.
    limited = signed_in(app, add_user(app, "cleo", Role.VIEWER, ["cam2"])).get("/metrics").text
    assert "cam1" not in limited
    assert 'camera="cam2"' in limited


def test_server_config_checks_networks_and_tls_pairs() -> None:
    assert ServerConfig().allow_networks == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ValidationError, match="not a network"):
        ServerConfig(allow_networks=["10.0.0.0/33"])
    with pytest.raises(ValidationError, match="go together"):
        ServerConfig(tls_cert=Path("c.pem"))


def wait_done(c: Any, export_id: str, timeout: float = 120) -> dict[str, Any]:
    """An export's record once it is done or failed (tests of the export routes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [x] = [x for x in c.get("/api/exports").json()["exports"] if x["id"] == export_id]
        if x["state"] in ("done", "failed"):
            return dict(x)
        time.sleep(0.2)
    raise AssertionError(f"export {export_id} not done in {timeout} s")
