"""Roles and what each may do; the single table every endpoint and command checks against.

The profile (custodes.privacy.policy) says what a deployment may do at all, a role who may do
it, and a case when. The administrator runs the system but holds no permission that reads
biometric data or unredacted video: installing cameras does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"  # watches live view and redacted playback
    OPERATOR = "operator"  # site operator: plays back, exports, places holds
    INVESTIGATOR = "investigator"  # opens cases, searches inside approved ones
    APPROVER = "approver"  # data-protection officer: approves cases, answers access requests
    INSPECTOR = "inspector"  # privacy agency: read-only audit, retention and configuration
    ADMIN = "admin"  # installs, manages users; no biometric data


class Permission(StrEnum):
    STATUS_VIEW = "status.view"  # camera health, disk
    LIVE_VIEW = "live.view"  # live pictures, always redacted
    PLAYBACK_REDACTED = "playback.redacted"
    PLAYBACK_UNREDACTED = "playback.unredacted"
    EVENTS_VIEW = "events.view"  # events with redacted snapshots
    EVENTS_ACKNOWLEDGE = "events.acknowledge"  # the review queue: mark events as seen
    EXPORT = "export"  # redacted, signed exports
    EXPORT_UNREDACTED = "export.unredacted"  # only inside an approved case
    HOLDS_MANAGE = "holds.manage"
    CASE_OPEN = "case.open"
    CASE_VIEW = "case.view"
    CASE_APPROVE = "case.approve"
    FACE_SEARCH = "face.search"  # only inside an approved case
    ALERT_CONFIRM = "alert.confirm"  # confirm a live watchlist candidate (a second person)
    GALLERY_MANAGE = "gallery.manage"
    SUBJECT_ACCESS = "subject_access"  # export a requester's own footage, others blurred
    AUDIT_VIEW = "audit.view"
    SYSTEM_VIEW = "system.view"  # retention, deletion passes, cameras, users (read)
    USERS_MANAGE = "users.manage"
    CAMERAS_MANAGE = "cameras.manage"  # add, change, remove cameras (the config file)


P = Permission
_VIEWER = frozenset({P.STATUS_VIEW, P.LIVE_VIEW, P.PLAYBACK_REDACTED, P.EVENTS_VIEW})
# The operator (the caretaker) works through the review queue; a viewer watches only.
_OPERATOR = _VIEWER | {P.PLAYBACK_UNREDACTED, P.EXPORT, P.HOLDS_MANAGE, P.EVENTS_ACKNOWLEDGE}

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.INVESTIGATOR: _OPERATOR | {
        P.EXPORT_UNREDACTED, P.CASE_OPEN, P.CASE_VIEW, P.FACE_SEARCH, P.ALERT_CONFIRM,
        P.GALLERY_MANAGE,
    },
    Role.APPROVER: frozenset({
        P.STATUS_VIEW, P.CASE_VIEW, P.CASE_APPROVE, P.ALERT_CONFIRM, P.SUBJECT_ACCESS,
        P.AUDIT_VIEW, P.SYSTEM_VIEW, P.EVENTS_VIEW,
    }),
    Role.INSPECTOR: frozenset({P.STATUS_VIEW, P.SYSTEM_VIEW, P.AUDIT_VIEW, P.CASE_VIEW}),
    # An administrator also watches as a viewer does (redacted live view and playback,
    # events with blurred snapshots): a head teacher who runs the node needs no second account
    # to watch it. Nothing unredacted and no biometric data: those roles stay other people's,
    # behind the two-person rule (custodes.auth.grants).
    Role.ADMIN: _VIEWER | {
        P.SYSTEM_VIEW, P.USERS_MANAGE, P.AUDIT_VIEW,
        P.CAMERAS_MANAGE,
    },
}


def can(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in user (or a CLI operator), with where they act from."""

    name: str
    role: Role
    cameras: frozenset[str] | None = None  # None: every camera
    address: str | None = None

    def can(self, permission: Permission) -> bool:
        return can(self.role, permission)

    def sees_camera(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras
