"""Cameras managed by the administrator (cameras.manage): list, test a stream, add, change,
enable or disable, remove.

Every change goes through custodes.onboarding.manage: written to the config file (validated
by the configuration's own code: an invalid change is 400 with each key and why, and the file
is left as it was), applied to the running node, audited with the file's digest before and
after. A user limited to some cameras changes only those and adds none. Passwords are never
returned; the stream test's picture is redacted whoever asks.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from custodes.api.deps import get_node, refuse, require, require_camera
from custodes.audit.actions import Action
from custodes.audit.log import Outcome
from custodes.auth.roles import Actor, Permission
from custodes.cameras.discovery import WS_DISCOVERY_PORT, discover, local_ipv4_addresses
from custodes.cameras.probe import probe
from custodes.config import NAME_PATTERN, CameraConfig, LocationType, redact_url
from custodes.onboarding import cameras
from custodes.onboarding.apply import NodeStopping
from custodes.onboarding.manage import Changed, NoConfigFile, Refused, change
from custodes.onboarding.stream_test import StreamTestError, probe_stream
from custodes.privacy.policy import placement_problem

if TYPE_CHECKING:
    from custodes.app import Node

router = APIRouter(prefix="/api/system/cameras", tags=["cameras"])

Manager = Annotated[Actor, Depends(require(Permission.CAMERAS_MANAGE))]
CameraName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="Camera name")]


class StreamTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    main_url: str = Field(max_length=2000)
    sub_url: str | None = Field(None, max_length=2000)
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=200, description="Omitted: the configured "
                                 "camera's password (with `camera`)")
    camera: str | None = Field(None, pattern=NAME_PATTERN, description="A configured camera "
                               "whose password and privacy zones the test uses")


class Enabled(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


def _changed(node: Node, actor: Actor, action: Action, camera: str, mutate: Any, *,
             fields: list[str] | None = None) -> Changed:
    try:
        return change(node, actor, action, camera, mutate, fields=fields)
    except NoConfigFile as exc:
        raise HTTPException(409, str(exc)) from None
    except NodeStopping as exc:
        raise HTTPException(503, str(exc)) from None
    except Refused as exc:
        raise HTTPException(400, f"refused, nothing written: {exc}") from None


def _scoped(node: Node, actor: Actor, action: Action, camera: str) -> NoReturn:
    refuse(node, actor.name, action, camera, "a user limited to some cameras adds none",
           address=actor.address)


def _row(node: Node, name: str) -> dict[str, Any]:
    row = cameras.described(node.config, name)
    sup = node.supervisors.get(name)
    row["state"] = sup.health.state.value if sup is not None else "not recording"
    row["reason"] = sup.health.reason if sup is not None else ""
    return row


@router.get("")
def list_cameras(request: Request, actor: Manager) -> dict[str, Any]:
    """The configured cameras (no password), the sites, and the places the profile allows."""
    node = get_node(request)
    config = node.config
    return {
        "editable": node.config_path is not None,
        "profile": config.profile.value,
        "locations": [{"value": loc.value, "allowed": placement_problem(config.profile,
                                                                        loc.value) is None}
                      for loc in LocationType],
        "sites": {k: v.name for k, v in config.sites.items()},
        "cameras": [_row(node, name) for name in config.cameras if actor.sees_camera(name)],
    }


@router.post("", status_code=201)
def add_camera(request: Request, actor: Manager, body: cameras.NewCamera) -> dict[str, Any]:
    """Add a camera: written to the config file, recording at once (audited)."""
    node = get_node(request)
    if actor.cameras is not None:
        _scoped(node, actor, Action.CAMERA_ADD, body.name)
    done = _changed(node, actor, Action.CAMERA_ADD, body.name,
                    lambda doc: cameras.add(doc, body))
    return {"camera": _row(node, body.name), **done.to_json()}


@router.put("/{camera}")
def update_camera(request: Request, actor: Manager, camera: CameraName,
                  body: cameras.CameraForm) -> dict[str, Any]:
    """Change a camera's place, purpose, streams, credentials or state (audited)."""
    node = get_node(request)
    require_camera(node, actor, camera)
    fields = sorted(body.model_dump(exclude_unset=True))
    done = _changed(node, actor, Action.CAMERA_UPDATE, camera,
                    lambda doc: cameras.update(doc, camera, body), fields=fields)
    return {"camera": _row(node, camera), **done.to_json()}


@router.post("/{camera}/enabled")
def set_enabled(request: Request, actor: Manager, camera: CameraName,
                body: Enabled) -> dict[str, Any]:
    """Enable or disable a camera; a disabled one stays configured but records nothing."""
    node = get_node(request)
    require_camera(node, actor, camera)
    done = _changed(node, actor, Action.CAMERA_UPDATE, camera,
                    lambda doc: cameras.set_enabled(doc, camera, body.enabled),
                    fields=["enabled"])
    return {"camera": _row(node, camera), **done.to_json()}


@router.delete("/{camera}")
def remove_camera(request: Request, actor: Manager, camera: CameraName) -> dict[str, Any]:
    """Remove a camera from the config; its footage is kept until retention deletes it."""
    node = get_node(request)
    require_camera(node, actor, camera)
    done = _changed(node, actor, Action.CAMERA_REMOVE, camera,
                    lambda doc: cameras.remove(doc, camera))
    return {"camera": camera, **done.to_json()}


@router.post("/test")
def test_stream(request: Request, actor: Manager, body: StreamTest) -> dict[str, Any]:
    """Open the streams: codec, resolution and frame rate of each, and a redacted picture
    (of the sub stream when there is one). Audited, without the password."""
    node = get_node(request)
    known = None
    if body.camera is not None:
        require_camera(node, actor, body.camera)
        known = node.config.cameras[body.camera]
    password = _stored_password(known, body.password, body.main_url, body.sub_url)
    try:
        # The configuration's own code checks the URLs and puts the credentials in them.
        cam = CameraConfig.model_validate({
            "site": "test", "location": "other", "purpose": "stream test",
            "main_url": body.main_url, "sub_url": body.sub_url or None,
            "username": body.username or None, "password": password if body.username else None,
        })
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: "
                            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise HTTPException(400, reasons) from None
    target = body.camera or redact_url(body.main_url)
    zones = list(known.privacy_zones) if known is not None else []
    facts: dict[str, Any] = {}
    try:
        main = probe_stream(cam.main_source, zones)
        facts["main"] = main.to_json()
        preview = main.preview_jpeg
        if cam.sub_source is not None:
            sub = probe_stream(cam.sub_source, zones)
            facts["sub"] = sub.to_json()
            preview = sub.preview_jpeg
    except StreamTestError as exc:
        node.audit.record(actor.name, Action.CAMERA_TEST, target, outcome=Outcome.FAILED,
                          detail={"reason": str(exc), **facts}, address=actor.address)
        raise HTTPException(422, str(exc)) from None
    node.audit.record(actor.name, Action.CAMERA_TEST, target,
                      detail={**facts, "preview": "redacted"}, address=actor.address)
    return {**facts, "redacted": True,
            "preview": "data:image/jpeg;base64," + base64.b64encode(preview).decode()}


class Discover(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Asked for explicitly: a multicast probe goes out on every local network the node is on.
    multicast: bool = Field(description="Send the multicast probe (from `interfaces`, default: "
                            "every non-loopback interface)")
    hosts: list[str] = Field(default_factory=list, max_length=256,
                             description="IPv4 addresses asked directly (unicast)")
    interfaces: list[str] | None = Field(None, max_length=16, description="Local IPv4 "
                                         "addresses to send the multicast probe from")
    timeout: float = Field(3.0, ge=0.5, le=10)
    port: int = Field(WS_DISCOVERY_PORT, ge=1, le=65535,
                      description="WS-Discovery port (3702; another only for simulators)")


class OnvifProbe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, description="The ONVIF device service URL (http/https)")
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=200, description="Omitted: the configured "
                                 "camera's password (with `camera`)")
    camera: str | None = Field(None, pattern=NAME_PATTERN)


def _stored_password(camera: CameraConfig | None, given: str | None,
                     *urls: str | None) -> str | None:
    """The password to use: the one given, else the configured camera's, but only towards the
    addresses it is configured for (never to a host the caller names)."""
    if given or camera is None or camera.password is None:
        return given or None
    if not cameras.hosts(*urls) <= cameras.hosts(camera.main_url, camera.sub_url,
                                                 camera.onvif_url):
        raise HTTPException(400, "the stored password is sent only to the camera's configured "
                                 "addresses: type it again to test another address")
    return camera.password.get_secret_value()


def _addresses(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    try:
        return [str(ipaddress.IPv4Address(v)) for v in values]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@router.post("/discover")
def discover_cameras(request: Request, actor: Manager, body: Discover) -> dict[str, Any]:
    """ONVIF cameras answering a WS-Discovery probe (custodes.cameras.discovery); audited."""
    node = get_node(request)
    hosts, interfaces = _addresses(body.hosts) or [], _addresses(body.interfaces)
    if not body.multicast:
        if not hosts:
            raise HTTPException(400, "give the addresses to ask, or ask for the multicast probe")
        interfaces = []
    elif interfaces is None:
        interfaces = local_ipv4_addresses()
    try:
        found = discover(body.timeout, interfaces=interfaces, hosts=hosts, port=body.port)
    except OSError as exc:
        node.audit.record(actor.name, Action.CAMERA_DISCOVER, "network", outcome=Outcome.FAILED,
                          detail={"reason": str(exc)}, address=actor.address)
        raise HTTPException(503, f"no discovery probe could be sent: {exc}") from None
    node.audit.record(actor.name, Action.CAMERA_DISCOVER, "network", address=actor.address,
                      detail={"hosts": hosts, "found": [d.address for d in found]})
    return {"devices": [d.as_json() for d in found]}


@router.post("/onvif")
def onvif_probe(request: Request, actor: Manager, body: OnvifProbe) -> dict[str, Any]:
    """What the camera's ONVIF service says (custodes.cameras.probe): maker, model, firmware,
    its main and sub stream URIs, clock and findings; audited without the password."""
    node = get_node(request)
    known = None
    if body.camera is not None:
        require_camera(node, actor, body.camera)
        known = node.config.cameras[body.camera]
    password = _stored_password(known, body.password, body.url)
    result = asyncio.run(probe(body.url, body.username or None, password))
    device = result.device
    node.audit.record(
        actor.name, Action.CAMERA_TEST, body.camera or result.url, address=actor.address,
        outcome=Outcome.OK if result.error is None else Outcome.FAILED,
        detail={"onvif": result.url, "error": result.error,
                "device": None if device is None else [device.manufacturer, device.model,
                                                       device.firmware]})
    return result.as_json()
