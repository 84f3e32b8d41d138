"""Security properties of the whole API, checked over every route the app has.

Routes are discovered from the app, so a route added later is covered without touching this
file, and a route that declares no access fails it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from custodes.api.app import create_app
from custodes.api.deps import (
    CSRF_HEADER,
    PUBLIC,
    SAFE_METHODS,
    SESSION_COOKIE,
    SIGNED_IN,
    RouteAccess,
    route_table,
)
from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import PERMISSIONS, Permission, Role
from custodes.auth.users import User
from test_auth import (
    LOCAL,
    PASSWORD,
    add_user,
    audit_entries,
    client,
    make_app,
    open_node,
    signed_in,
)

# A value for each path parameter that looks real: the test node's camera, a user that
# exists, an id. Unknown names get "1", which a route must answer with 404 or 422 at most.
PATH_VALUES = {"camera": "cam1", "name": "admin", "user": "admin"}
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_REFUSED_BY_ROLE = re.compile(r"role lacks the permission")


def checked_routes(app: FastAPI) -> list[RouteAccess]:
    """Every API route (and /metrics): what the matrix must cover."""
    return [r for r in route_table(app) if r.path.startswith("/api/") or r.path == "/metrics"]


def concrete(path: str, values: dict[str, str] | None = None) -> str:
    values = {**PATH_VALUES, **(values or {})}
    return _PARAM.sub(lambda m: values.get(m.group(1), "1"), path)


@pytest.fixture
def node(tmp_path: Path) -> Any:
    yield from open_node(tmp_path)


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


@pytest.fixture
def users(app: FastAPI) -> dict[Role, User]:
    return {role: add_user(app, role.value, role) for role in Role}


def call(c: httpx.Client | Any, method: str, path: str) -> httpx.Response:
    body: dict[str, Any] | None = {} if method not in SAFE_METHODS else None
    response: httpx.Response = c.request(method, path, json=body)
    return response


def test_every_api_route_declares_its_access(app: FastAPI) -> None:
    routes = checked_routes(app)
    assert len(routes) >= 15
    undeclared = [f"{sorted(r.methods)} {r.path}" for r in routes if len(r.access) != 1]
    assert not undeclared, (
        "routes without exactly one access declaration (require(...), signed_in or public): "
        f"{undeclared}"
    )
    public = {r.path for r in routes if PUBLIC in r.access}
    assert public <= {"/api/auth/login", "/api/health"}, public


def test_role_matrix_every_route_by_every_role(app: FastAPI, users: dict[Role, User]) -> None:
    """Anonymous gets 401 on every non-public route; a role gets 403 exactly when it lacks
    the route's permission; otherwise the request is not refused for who is asking."""
    problems = []
    checked = 0
    for route in checked_routes(app):
        [access] = route.access
        path = concrete(route.path)
        for method in sorted(route.methods - {"HEAD"}):
            r = call(client(app), method, path)
            if access == PUBLIC:
                expected_anon = r.status_code not in (401, 403)
            else:
                expected_anon = r.status_code == 401
            if not expected_anon:
                problems.append(f"anonymous {method} {path}: {r.status_code}")
            for role, user in users.items():
                # A fresh session per request: some routes (sign-out) end the one they get.
                r = call(signed_in(app, user), method, path)
                checked += 1
                allowed = access in (PUBLIC, SIGNED_IN) or access in PERMISSIONS[role]
                refused = r.status_code == 401 or (
                    r.status_code == 403 and bool(_REFUSED_BY_ROLE.search(r.text))
                )
                if allowed == refused:
                    problems.append(f"{role.value} {method} {path}: {r.status_code} {r.text}"
                                    f" (declared {access})")
                # 503 is an answer (a camera with no live picture); 500 is a bug.
                if r.status_code == 500:
                    problems.append(f"{role.value} {method} {path}: {r.status_code}")
    assert not problems, "\n".join(problems)
    assert checked >= 15 * len(Role)


def test_refusals_are_audited_with_the_reason(app: FastAPI, node: Node,
                                              users: dict[Role, User]) -> None:
    r = signed_in(app, users[Role.VIEWER]).get("/api/audit")
    assert r.status_code == 403
    assert r.json() == {"detail": "the viewer role lacks the permission 'audit.view'"}
    [entry] = [e for e in audit_entries(node) if e["outcome"] == "refused"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("viewer", "access",
                                                                   "/api/audit")
    assert '"permission": "audit.view"' in entry["detail"]


def test_per_camera_permissions_limit_what_is_shown(app: FastAPI) -> None:
    cleo = add_user(app, "cleo", Role.OPERATOR, ["cam2"])
    c = signed_in(app, cleo)
    assert [cam["name"] for cam in c.get("/api/status").json()["cameras"]] == ["cam2"]
    # Every route with a {camera} parameter refuses cam1 to her (403) and knows no cam9 (404).
    for route in checked_routes(app):
        if "{camera" not in route.path or "GET" not in route.methods:
            continue
        [access] = route.access
        if isinstance(access, Permission) and access not in PERMISSIONS[Role.OPERATOR]:
            continue
        query = _required_query(app, route.path)
        assert c.get(concrete(route.path), params=query).status_code == 403, route.path
        assert c.get(concrete(route.path, {"camera": "cam9"}), params=query
                     ).status_code == 404, route.path


# -- CSRF -----------------------------------------------------------------------------------


def test_state_changing_routes_need_the_sessions_csrf_token(
        app: FastAPI, node: Node, users: dict[Role, User]) -> None:
    unsafe = [r for r in checked_routes(app) if r.methods - SAFE_METHODS and PUBLIC not in
              r.access]
    assert unsafe
    other = signed_in(app, users[Role.ADMIN]).headers[CSRF_HEADER]  # another session's token
    for route in unsafe:
        [access] = route.access
        role = next(r for r in Role if access == SIGNED_IN or access in PERMISSIONS[r])
        for method in route.methods - SAFE_METHODS:
            for header in (None, "", "forged", other):
                c = signed_in(app, users[role])
                if header is None:
                    del c.headers[CSRF_HEADER]
                else:
                    c.headers[CSRF_HEADER] = header
                r = call(c, method, concrete(route.path))
                assert r.status_code == 403, (method, route.path, header, r.text)
                assert "CSRF" in r.json()["detail"]
    refused = [e for e in audit_entries(node) if "CSRF" in e["detail"]]
    assert len(refused) == 4 * sum(len(r.methods - SAFE_METHODS) for r in unsafe)


def test_bearer_tokens_need_no_csrf_token(app: FastAPI, users: dict[Role, User]) -> None:
    _, token = app.state.sessions.create_token(users[Role.ADMIN], "automation")
    c = client(app)
    c.headers["Authorization"] = f"Bearer {token}"
    r = c.post("/api/users", json={"name": "newcomer", "role": "viewer"})
    assert r.status_code == 201, r.text


def test_login_accepts_only_json_so_a_cross_site_form_cannot_sign_in(app: FastAPI) -> None:
    add_user(app, "vera", Role.VIEWER)
    c = client(app)
    form = c.post("/api/auth/login", data={"name": "vera", "password": PASSWORD})
    assert form.status_code == 422
    text = c.post("/api/auth/login", content=f'{{"name":"vera","password":"{PASSWORD}"}}',
                  headers={"Content-Type": "text/plain"})
    assert text.status_code == 422
    assert SESSION_COOKIE not in c.cookies


# -- session fixation -------------------------------------------------------------------------


def test_login_never_adopts_a_session_id_set_before(app: FastAPI) -> None:
    vera, mallory = add_user(app, "vera", Role.VIEWER), add_user(app, "mallory", Role.VIEWER)
    # 1. A made-up id planted in the victim's browser is replaced at sign-in.
    c = client(app)
    c.cookies.set(SESSION_COOKIE, "planted-by-an-attacker", domain="testserver.local")
    assert c.post("/api/auth/login", json={"name": "vera", "password": PASSWORD}
                  ).status_code == 200
    assert c.cookies[SESSION_COOKIE] != "planted-by-an-attacker"
    planted = client(app)
    planted.cookies.set(SESSION_COOKIE, "planted-by-an-attacker")
    assert planted.get("/api/auth/me").status_code == 401
    # 2. The attacker's own valid session planted in the victim's browser: sign-in gives the
    #    victim a new id, and the planted one is ended, so it never becomes the victim's.
    attacker = signed_in(app, mallory)
    known = attacker.cookies[SESSION_COOKIE]
    victim = client(app)
    victim.cookies.set(SESSION_COOKIE, known, domain="testserver.local")
    assert victim.post("/api/auth/login", json={"name": "vera", "password": PASSWORD}
                       ).status_code == 200
    assert victim.cookies[SESSION_COOKIE] != known
    assert victim.get("/api/auth/me").json()["name"] == "vera"
    assert attacker.get("/api/auth/me").status_code == 401
    assert vera.name == "vera"


# -- path traversal ---------------------------------------------------------------------------

TRAVERSALS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fSECRET.txt",
    "..%5c..%5c..%5cSECRET.txt",
    "....//....//....//SECRET.txt",
    "/etc/passwd",
    "cam1/../../../SECRET.txt",
    "custodes.db",
    "..",
    "%00",
]


def test_no_route_serves_files_from_outside_its_folder(app: FastAPI, node: Node,
                                                       users: dict[Role, User]) -> None:
    """Every route with a path or query parameter, given traversal attempts in each, answers
    4xx or an empty result, never a file from elsewhere and never a 500."""
    marker = "TOP-SECRET-MARKER-7f3a"
    for folder in (node.layout.root.parent, node.layout.root, node.layout.recordings):
        (folder / "SECRET.txt").write_text(marker)
    tried = 0
    for route in checked_routes(app):
        [access] = route.access
        if access == PUBLIC or "GET" not in route.methods:
            continue
        role = next(r for r in Role if access == SIGNED_IN or access in PERMISSIONS[r])
        c = signed_in(app, users[role])
        params = _PARAM.findall(route.path)
        queries = [q for q in _string_queries(app, route.path)]
        for attack in TRAVERSALS:
            urls = [concrete(route.path, {p: attack}) for p in params]
            urls += [f"{concrete(route.path)}?{q}={attack}" for q in queries]
            for url in urls:
                r = c.get(url)
                tried += 1
                assert r.status_code != 500, (url, r.text)
                assert marker not in r.text, url
                assert "root:x:0:0" not in r.text, url
                assert r.headers.get("content-type", "").split(";")[0] in (
                    "application/json", "text/html", "text/plain", ""), (url, r.headers)
    assert tried > 0


def _required_query(app: FastAPI, path: str) -> dict[str, str]:
    """Plausible values for the required query parameters of ``path``'s GET route."""
    operation = app.openapi()["paths"].get(path, {}).get("get", {})
    return {p["name"]: "1000" if p.get("schema", {}).get("type") in ("number", "integer")
            else "x" for p in operation.get("parameters", [])
            if p.get("in") == "query" and p.get("required")}


def _string_queries(app: FastAPI, path: str) -> list[str]:
    """Names of the string query parameters of ``path``'s GET route, from the OpenAPI schema."""
    operation = app.openapi()["paths"].get(path, {}).get("get", {})
    names = []
    for p in operation.get("parameters", []):
        schema = p.get("schema", {})
        types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
        if p.get("in") == "query" and "string" in types and "enum" not in schema:
            names.append(p["name"])
    return names


# -- client allowlist -------------------------------------------------------------------------


def test_clients_outside_the_allowed_networks_are_refused_and_audited(tmp_path: Path) -> None:
    for node in open_node(tmp_path, allow_networks=["10.0.0.0/8", "fd00::/8"]):
        app = create_app(node)
        assert client(app, ("10.1.2.3", 1)).get("/api/health").status_code == 200
        assert client(app, ("fd00::5", 1)).get("/api/health").status_code == 200
        for address in ("127.0.0.1", "192.168.1.5", "::ffff:192.168.1.5", "testclient"):
            r = client(app, (address, 1)).get("/api/health")
            assert r.status_code == 403, address
            assert "not among the networks" in r.json()["detail"]
        # Refused again: still refused, but audited once per address (no flooding).
        assert client(app, ("192.168.1.5", 1)).get("/").status_code == 403
        refused = audit_entries(node, Action.CLIENT_REFUSED)
        assert [e["address"] for e in refused] == [
            "127.0.0.1", "192.168.1.5", "::ffff:192.168.1.5", "testclient",
        ]


def test_the_default_allows_only_this_machine(app: FastAPI) -> None:
    assert client(app, LOCAL).get("/api/health").status_code == 200
    assert client(app, ("::1", 1)).get("/api/health").status_code == 200
    assert client(app, ("10.0.0.1", 1)).get("/api/health").status_code == 403


CAMERA_SOURCES = frozenset({"main_url", "sub_url", "onvif_url", "url"})


def test_no_route_sends_pictures_to_other_devices(app: FastAPI) -> None:
    """The agency's rule: pictures must not be transmittable to phones or other devices. No
    route takes a URL, address, phone number or e-mail to send something to."""
    schema = app.openapi()
    suspicious = re.compile(r"url|webhook|callback|phone|email|e_mail|push|notify|destination",
                            re.IGNORECASE)
    found = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            names = [p["name"] for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            if ref:
                model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
                names += list(model.get("properties", {}))
            if path.startswith("/api/system/cameras"):
                # Cameras installed by the administrator: their URLs are sources the node
                # reads video from (as in the config file), never a place pictures are sent.
                names = [n for n in names if n not in CAMERA_SOURCES]
            found += [f"{method.upper()} {path}: {n}" for n in names if suspicious.search(n)]
            if suspicious.search(path):
                found.append(f"{method.upper()} {path}")
    assert not found, found
