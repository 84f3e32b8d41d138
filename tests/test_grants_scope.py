"""An administrator limited to some cameras is an attacker too: through the grants list they
would learn who is being given which other cameras, and through grants and accounts they
would hand out (or, through a new password, take) access to cameras they do not have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from test_auth import add_user, audit_entries, get_users_of, make_app, open_node, signed_in


@pytest.fixture
def node(tmp_path: Path) -> Any:
    yield from open_node(tmp_path)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def test_a_camera_limited_administrator_lists_and_decides_only_grants_of_their_cameras(
        app: FastAPI, node: Node) -> None:
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    ada = signed_in(app, add_user(app, "ada", Role.ADMIN))
    lim = signed_in(app, add_user(app, "lim", Role.ADMIN, ["cam1"]))
    add_user(app, "dora", Role.APPROVER, ["cam2"])
    add_user(app, "olga", Role.OPERATOR, ["cam1"])

    def grant(c: Any, path: str, body: dict[str, Any] | None = None) -> int:
        r = c.post(path, json=body) if body is not None else c.post(path)
        assert r.status_code == 202, r.text
        return int(r.json()["grant"]["id"])

    own = grant(root, "/api/users", {"name": "ivan", "role": "investigator",
                                     "cameras": ["cam1"]})
    other = grant(root, "/api/users", {"name": "inez", "role": "investigator",
                                       "cameras": ["cam2"]})
    both = grant(root, "/api/users", {"name": "iris", "role": "investigator",
                                      "cameras": ["cam1", "cam2"]})
    every = grant(root, "/api/users", {"name": "anna", "role": "approver"})
    reset = grant(root, "/api/users/dora/password")  # dora sees cam2: her password reaches it
    r = root.patch("/api/users/olga", json={"role": "investigator"})
    assert r.status_code == 202, r.text
    role = int(r.json()["grant"]["id"])

    def ids(c: Any, **query: str) -> list[int]:
        r = c.get("/api/grants", params=query)
        assert r.status_code == 200, r.text
        return [g["id"] for g in r.json()]

    # The unlimited administrator still sees every grant.
    assert ids(ada) == [role, reset, every, both, other, own]
    # The limited one only those whose every camera is theirs: no other camera's, none for
    # every camera, and no filter widens that.
    assert ids(lim) == [role, own]
    # (A role grant names no camera: the camera filter lists it under each, as before.)
    assert ids(lim, camera="cam2") == [role]
    assert ids(lim, user="inez") == ids(lim, user="anna") == ids(lim, kind="password") == []
    assert ids(lim, status="pending") == [role, own]

    # Deciding a grant beyond their cameras is refused (403 with the reason) and audited.
    before = len(audit_entries(node, Action.USER_GRANT_CONFIRM))
    for refused in (other, both, every, reset):
        for verb in ("confirm", "cancel"):
            r = lim.post(f"/api/grants/{refused}/{verb}")
            assert r.status_code == 403, (refused, verb, r.text)
            assert "beyond yours" in r.json()["detail"]
    refusals = [e for e in audit_entries(node, Action.USER_GRANT_CONFIRM)[before:]
                if e["outcome"] == "refused"]
    assert {e["target"] for e in refusals} == {f"grant {g}" for g in (other, both, every,
                                                                      reset)}
    assert all(e["actor"] == "lim" for e in refusals)
    assert len([e for e in audit_entries(node, Action.USER_GRANT_CANCEL)
                if e["outcome"] == "refused"]) == 4
    users = get_users_of(app)
    assert users.get("inez") is None
    assert users.get("anna") is None
    # One within their cameras they decide as any second administrator does.
    assert lim.post(f"/api/grants/{own}/confirm").status_code == 200
    assert lim.post(f"/api/grants/{role}/cancel").json()["status"] == "cancelled"
    # The unlimited administrator decides the rest.
    assert ada.post(f"/api/grants/{other}/confirm").status_code == 200


def test_a_camera_limited_administrator_hands_out_no_camera_beyond_theirs(
        app: FastAPI, node: Node) -> None:
    lim = signed_in(app, add_user(app, "lim", Role.ADMIN, ["cam1"]))
    add_user(app, "vera", Role.VIEWER)  # every camera
    add_user(app, "otto", Role.OPERATOR, ["cam1"])
    users = get_users_of(app)
    attempts = [
        # A grant for another camera, or for every one.
        ("post", "/api/users", {"name": "ivan", "role": "investigator", "cameras": ["cam2"]}),
        ("post", "/api/users", {"name": "anna", "role": "approver"}),
        # An account with no grant needed, which they would then sign in as.
        ("post", "/api/users", {"name": "mole", "role": "viewer"}),
        ("post", "/api/users", {"name": "mole", "role": "viewer", "cameras": ["cam1", "cam2"]}),
        # Widening an account of theirs, or touching one that sees more.
        ("patch", "/api/users/otto", {"cameras": ["cam1", "cam2"]}),
        ("patch", "/api/users/otto", {"cameras": None}),
        ("patch", "/api/users/vera", {"disabled": True}),
        ("patch", "/api/users/vera", {"role": "approver"}),
        # A new password for an account that sees every camera would be theirs to use.
        ("post", "/api/users/vera/password", None),
    ]
    for method, path, body in attempts:
        r = lim.request(method.upper(), path, json=body)
        assert r.status_code == 403, (path, body, r.text)
        assert "beyond yours" in r.json()["detail"]
    assert users.get("mole") is None
    assert users.get("otto").cameras == frozenset({"cam1"})  # type: ignore[union-attr]
    assert not users.get("vera").disabled  # type: ignore[union-attr]
    refused = [e for e in audit_entries(node) if e["outcome"] == "refused"]
    assert len(refused) == len(attempts)
    assert all(e["actor"] == "lim" for e in refused)
    # Within their cameras they manage accounts as before.
    r = lim.post("/api/users", json={"name": "cleo", "role": "viewer", "cameras": ["cam1"]})
    assert r.status_code == 201, r.text
    assert lim.patch("/api/users/otto", json={"disabled": True}).status_code == 200


def test_a_camera_limited_administrator_lists_only_the_accounts_of_their_cameras(
        app: FastAPI) -> None:
    root = signed_in(app, add_user(app, "root", Role.ADMIN))
    lim = signed_in(app, add_user(app, "lim", Role.ADMIN, ["cam1"]))
    add_user(app, "vera", Role.VIEWER)  # every camera
    add_user(app, "otto", Role.OPERATOR, ["cam1"])
    add_user(app, "dora", Role.APPROVER, ["cam2"])
    add_user(app, "iris", Role.INVESTIGATOR, ["cam1", "cam2"])

    def names(c: Any) -> list[str]:
        r = c.get("/api/users")
        assert r.status_code == 200, r.text
        return [u["name"] for u in r.json()]

    assert names(root) == ["dora", "iris", "lim", "otto", "root", "vera"]
    # The attack: who watches which other cameras, from the list, one by one, or the page.
    assert names(lim) == ["lim", "otto"]
    for hidden in ("dora", "iris", "vera", "root"):
        r = lim.get(f"/api/users/{hidden}")
        assert r.status_code == 404, r.text
        assert r.json() == lim.get("/api/users/nobody").json() | {
            "detail": f"no user named {hidden!r}"}
    assert lim.get("/api/users/otto").json()["cameras"] == ["cam1"]
    page = lim.get("/system")
    assert page.status_code == 200, page.text
    assert "otto" in page.text
    assert not any(f">{hidden}<" in page.text or f'"{hidden}"' in page.text
                   for hidden in ("dora", "iris", "vera"))
    assert "dora" in root.get("/system").text
