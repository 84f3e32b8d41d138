"""One camera change from start to end: written to the config file, applied, audited.

The order matters. The file is written first (validated by the configuration's own code), so
that what runs is always what the file says and survives a restart; then the running node is
pointed at the result; then the change is recorded with the file's digest before and after.
A refused change (invalid, or about a camera that does not exist) is recorded too, with the
reason, and leaves the file as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from custodes.audit.actions import Action
from custodes.auth.roles import Actor
from custodes.config import ConfigError
from custodes.config_edit import Document, edit_config
from custodes.onboarding.apply import Applied, NodeStopping, apply_config
from custodes.onboarding.cameras import CameraError

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)


class NoConfigFile(Exception):
    """The node was not started from a file: there is nothing to write the change to."""


class Refused(ValueError):
    """The change is not valid: ``issues`` say which key and why (nothing was written)."""

    def __init__(self, reason: str, issues: list[dict[str, Any]]) -> None:
        super().__init__(reason)
        self.issues = issues


@dataclass(frozen=True)
class Changed:
    before: str
    after: str
    applied: Applied

    def to_json(self) -> dict[str, Any]:
        return {"config_before": self.before, "config_after": self.after,
                "applied": self.applied.to_json()}


def change(node: Node, actor: Actor, action: Action, camera: str,
           mutate: Callable[[Document], None], *, fields: list[str] | None = None) -> Changed:
    """Write ``mutate``'s change of ``camera`` to the node's config file and apply it."""
    path = node.config_path
    if path is None:
        raise NoConfigFile("this node was not started from a configuration file "
                           "(custodes run --config FILE): cameras cannot be changed here")
    try:
        edit = edit_config(path, mutate)
    except ConfigError as exc:
        issues = [{"key": i.key, "message": i.message} for i in exc.issues]
        reason = "; ".join(f"{i.key}: {i.message}" if i.key else i.message for i in exc.issues)
        _refuse(node, actor, action, camera, reason, issues=issues)
    except CameraError as exc:
        _refuse(node, actor, action, camera, str(exc),
                issues=[{"key": f"cameras.{camera}", "message": str(exc)}])
    detail: dict[str, Any] = {"config_before": edit.before, "config_after": edit.after,
                              "file": str(path)}
    if fields is not None:
        detail["fields"] = fields  # names only: a value may be a password
    try:
        applied = apply_config(node, edit.config)
    except NodeStopping as exc:
        # Written but not applied: on record as such, then the caller says so.
        node.audit.record(actor.name, action, camera, address=actor.address,
                          detail={**detail, "applied": None, "note": str(exc)})
        raise
    detail["applied"] = applied.to_json()
    node.audit.record(actor.name, action, camera, detail=detail, address=actor.address)
    log.info("%s %s by %s: %s -> %s", action.value, camera, actor.name, edit.before[:12],
             edit.after[:12])
    return Changed(edit.before, edit.after, applied)


def _refuse(node: Node, actor: Actor, action: Action, camera: str, reason: str, *,
            issues: list[dict[str, Any]]) -> NoReturn:
    node.audit.record_refusal(actor.name, action, camera, reason, address=actor.address,
                              detail={"issues": issues})
    raise Refused(reason, issues)
