"""Cameras managed from the web UI: what a form may set, how it changes the config file, and
what is shown back.

A form sets only what installing a camera needs: where it is (site, kind of place), why
(purpose), its main and sub streams, its credentials, and whether it is enabled. Everything
else a camera's entry holds (recording, analytics, privacy zones) is kept as written. What is
valid is decided by `custodes.config` alone (the placement rules of the profile among it),
through `custodes.config_edit.edit_config`.

Passwords travel one way: a form may set or clear one; nothing returns it (``password_set``
says whether there is one). An omitted password keeps the one in the file, which may be a
``${ENV}`` reference.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml.comments import CommentedMap

from custodes.config import Config, LocationType, redact_url
from custodes.config_edit import Document


class CameraError(ValueError):
    """An edit that cannot be made to the document (the camera exists, or does not)."""


class CameraForm(BaseModel):
    """A camera as the administrator enters it. Bounds here only keep bodies small; validity
    is the configuration's to decide."""

    model_config = ConfigDict(extra="forbid")
    site: str = Field(max_length=63, description="Id of the site (from `sites`)")
    location: LocationType = Field(description="What kind of place the camera looks at")
    purpose: str = Field(max_length=500, description="Why this camera exists")
    main_url: str = Field(max_length=2000, description="RTSP URL of the main (recording) stream")
    sub_url: str | None = Field(None, max_length=2000, description="RTSP URL of the sub stream")
    onvif_url: str | None = Field(None, max_length=2000,
                                  description="The camera's ONVIF device service URL")
    username: str | None = Field(None, max_length=200, description="User name at the camera")
    password: str | None = Field(
        None, max_length=200,
        description="New password at the camera; omitted or null keeps the one configured")
    clear_password: bool = Field(False, description="Remove the configured password")
    enabled: bool = Field(True, description="Record and analyse the camera")


class NewCamera(CameraForm):
    name: str = Field(max_length=63, description="The camera's name (a-z, 0-9, _ and -)")


def _blank(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value.strip()


def _set(entry: dict[str, Any], key: str, value: object) -> None:
    """Set or remove ``key``: an existing key keeps its place and its comment."""
    if value is None:
        entry.pop(key, None)
    else:
        entry[key] = value


def _fill(entry: dict[str, Any], form: CameraForm) -> None:
    _set(entry, "site", form.site)
    _set(entry, "location", form.location.value)
    _set(entry, "purpose", form.purpose.strip())
    for key, value in (("main_url", form.main_url.strip()), ("sub_url", _blank(form.sub_url)),
                       ("onvif_url", _blank(form.onvif_url))):
        # A URL with a password in it is shown masked (user:***@host); sent back unchanged,
        # it means "keep the one written", never the mask itself.
        current = entry.get(key)
        if value is not None and current and "***" in value and value == redact_url(current):
            continue
        _set(entry, key, value)
    username = _blank(form.username)
    _set(entry, "username", username)
    if form.password and not form.clear_password:
        entry["password"] = form.password  # without a username the config refuses it
    elif form.clear_password or username is None:
        # No user name left: the stored password went with it (it cannot be used alone).
        entry.pop("password", None)
    # Written only when it says something: the default is enabled.
    if form.enabled:
        entry.pop("enabled", None)
    else:
        entry["enabled"] = False


def _cameras(doc: Document) -> dict[str, Any]:
    cameras = doc.get("cameras")
    if cameras is None:
        cameras = doc["cameras"] = CommentedMap()
    if not isinstance(cameras, dict):
        raise CameraError("the file's `cameras` is not a mapping: fix it by hand first")
    return cameras


def add(doc: Document, form: NewCamera) -> None:
    cameras = _cameras(doc)
    if form.name in cameras:
        raise CameraError(f"a camera named {form.name!r} exists already")
    entry = CommentedMap()
    _fill(entry, form)
    cameras[form.name] = entry


def hosts(*urls: object) -> set[tuple[str, int | None]]:
    """The (host, port) pairs of ``urls`` (strings; others and unparsable ones skipped)."""
    out = set()
    for url in urls:
        if isinstance(url, str) and url:
            try:
                parts = urlsplit(url)
                out.add(((parts.hostname or "").lower(), parts.port))
            except ValueError:
                continue
    return out


def update(doc: Document, name: str, form: CameraForm) -> None:
    entry = _cameras(doc).get(name)
    if not isinstance(entry, dict):
        raise CameraError(f"no camera named {name!r} in the file")
    # The stored password goes only where it went before: whoever moves a camera to another
    # address types the password again (else an administrator who never knew it could have it
    # sent to a host of their own).
    before = hosts(entry.get("main_url"), entry.get("sub_url"), entry.get("onvif_url"))
    after = hosts(form.main_url.strip(), _blank(form.sub_url), _blank(form.onvif_url))
    if "password" in entry and not form.password and not form.clear_password \
            and not after <= before:
        raise CameraError(f"cameras.{name}: the camera's address changes: give its password "
                          "again (the stored one is sent only to the addresses it was set for)")
    _fill(entry, form)


def set_enabled(doc: Document, name: str, enabled: bool) -> None:
    entry = _cameras(doc).get(name)
    if not isinstance(entry, dict):
        raise CameraError(f"no camera named {name!r} in the file")
    if enabled:
        entry.pop("enabled", None)
    else:
        entry["enabled"] = False


def remove(doc: Document, name: str) -> None:
    cameras = _cameras(doc)
    if name not in cameras:
        raise CameraError(f"no camera named {name!r} in the file")
    del cameras[name]


def described(config: Config, name: str) -> dict[str, Any]:
    """A camera's settings as the UI shows them: URLs without passwords, no password."""
    cam = config.cameras[name]
    return {
        "name": name, "site": cam.site, "location": cam.location.value, "purpose": cam.purpose,
        "main_url": redact_url(cam.main_url),
        "sub_url": None if cam.sub_url is None else redact_url(cam.sub_url),
        "onvif_url": None if cam.onvif_url is None else redact_url(cam.onvif_url),
        "username": cam.username, "password_set": cam.password is not None,
        "enabled": cam.enabled, "record": cam.record.mode.value,
        "analytics": cam.analytics.enabled, "privacy_zones": len(cam.privacy_zones),
    }
