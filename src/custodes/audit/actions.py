"""What the audit log records: one name for every kind of entry.

``AuditLog.record`` takes only these members, so no entry is written under a misspelt or
ad hoc action, and the code that queries the log (the inspection report, the node's start)
names the same members it was written with.

The values are what the log stores, under its hash chain: a value never changes. Entries keep
the name they were written with, so a renamed action would live under two names and a query
by the new one would miss every older entry. A new action is a new member; a retired one
stays, since old logs still hold it.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """Every action the node writes to its audit log, by area."""

    # -- footage: watching, exporting, keeping and deleting recordings ------------------------
    LIVE_VIEW = "live.view"  # live pictures (redacted): once per session and camera per 10 min
    LIVE_ORIGINAL = "live.original"  # live video as the camera sends it: per session+camera+hour
    PLAYBACK = "playback"  # a playback range, redacted or not (the detail says)
    SEGMENT_ORIGINAL = "segment.original"  # an original (unredacted) recording segment
    EXPORT = "export"  # a signed export made (or refused, or failed)
    EXPORT_DOWNLOAD = "export.download"
    EXPORT_EXPIRE = "export.expire"  # an export bundle deleted by the node (the detail: why)
    RETENTION_DELETE = "retention.delete"  # one deletion pass of recordings
    HOLD_ADD = "hold.add"  # recordings kept from retention
    HOLD_RELEASE = "hold.release"
    EVENT_ACKNOWLEDGE = "event.acknowledge"  # events marked as reviewed (the ids in the detail)

    # -- who may ask: sign-in, sessions, tokens, refused requests ----------------------------
    LOGIN = "login"
    LOGOUT = "logout"
    TOKEN_CREATE = "token.create"  # noqa: S105 - the name of an action, not a secret
    TOKEN_REVOKE = "token.revoke"  # noqa: S105
    SESSION_END = "session.end"  # a user ended one of their own sign-in sessions
    ACCESS = "access"  # a request refused: role lacks the permission, or no CSRF token
    CAMERA_ACCESS = "camera.access"  # a camera outside the user's cameras
    CLIENT_REFUSED = "client.refused"  # an address outside server.allow_networks
    # Pictures refused to a phone or small screen under the profile's device policy
    DEVICE_REFUSED = "device.refused"

    # -- user accounts (changes to roles need a second administrator: grants) ----------------
    USER_ADD = "user.add"
    USER_UPDATE = "user.update"
    USER_RESET_PASSWORD = "user.reset_password"  # noqa: S105
    USER_PASSWORD = "user.password"  # noqa: S105 - one's own password changed
    USER_GRANT_REQUEST = "user.grant_request"
    USER_GRANT_CONFIRM = "user.grant_confirm"
    USER_GRANT_CANCEL = "user.grant_cancel"

    # -- cases: the only way to identify anyone ----------------------------------------------
    CASE_OPEN = "case.open"
    CASE_ADD_SUBJECT = "case.add_subject"
    CASE_APPROVE = "case.approve"
    CASE_REJECT = "case.reject"
    CASE_CLOSE = "case.close"
    CASE_EXPIRE = "case.expire"
    CASE_VIEW = "case.view"
    CASE_LIST = "case.list"
    CASE_SUBJECT_CROP = "case.subject_crop"  # a subject's face crop opened
    FACE_SEARCH = "face.search"  # recordings searched for a case subject's face
    CASE_VERIFY = "case.verify"  # a person's verdict on one search result (the use log)
    CASE_AUTHORISATION = "case.authorisation"  # the authority's reference and time, recorded

    # -- the gallery and the live watchlist ----------------------------------------------------
    GALLERY_ENROLL = "gallery.enroll"
    GALLERY_APPROVE = "gallery.approve"
    GALLERY_UPDATE = "gallery.update"
    GALLERY_DELETE = "gallery.delete"
    GALLERY_EXPIRE = "gallery.expire"
    GALLERY_LIST = "gallery.list"
    GALLERY_VIEW = "gallery.view"  # a person's face crops opened
    WATCHLIST_ALERT = "watchlist.alert"  # a case subject seen live (by the node)
    ALERT_CONFIRM = "alert.confirm"
    ALERT_DISMISS = "alert.dismiss"

    # -- subject access: a requester's own footage -------------------------------------------
    SUBJECT_ACCESS_RECORD = "subject_access.record"
    SUBJECT_ACCESS_APPROVE = "subject_access.approve"
    SUBJECT_ACCESS_REJECT = "subject_access.reject"
    SUBJECT_ACCESS_PHOTO = "subject_access.photo"  # the requester's photo seen
    SUBJECT_ACCESS_EXPORT = "subject_access.export"
    SUBJECT_ACCESS_EXPIRE = "subject_access.expire"
    SUBJECT_ACCESS_VIEW = "subject_access.view"
    SUBJECT_ACCESS_LIST = "subject_access.list"
    # Retired, kept for the logs that hold it: one step from request to export, before
    # requests were recorded, approved and exported separately.
    SUBJECT_ACCESS_REQUEST = "subject_access.request"

    # -- biometric: the deployment profile and the descriptors it allows ---------------------
    PROFILE_PIN = "profile.pin"  # pinned at the first start; refused: the config names another
    PROFILE_CHANGE = "profile.change"
    BIOMETRIC_WIPE = "biometric.wipe"  # descriptors the profile no longer allows, deleted

    # -- the node itself ---------------------------------------------------------------------
    NODE_START = "node.start"
    NODE_STOP = "node.stop"
    CONFIG_CHANGE = "config.change"  # the configuration differs from the last start's
    # Cameras changed from the web UI (written to the config file and applied at once); the
    # detail holds the file's digest before and after, never a password.
    CAMERA_ADD = "camera.add"
    CAMERA_UPDATE = "camera.update"  # changed, enabled or disabled
    CAMERA_REMOVE = "camera.remove"
    CAMERA_TEST = "camera.test"  # a stream opened to test it (a redacted picture shown)
    CAMERA_DISCOVER = "camera.discover"  # ONVIF devices looked for on the network
    RISK_DATA_UPDATE = "risk_data.update"  # the fleet risk data replaced from a file
    CAMERA_AUDIT = "camera.audit"  # the fleet risk audit run (the detail: finding counts)

    # -- the audit log and the reports drawn from it -----------------------------------------
    AUDIT_SIGN = "audit.sign"  # recorded only when the node refuses to sign the log
    AUDIT_EXPORT = "audit.export"
    AUDIT_VERIFY = "audit.verify"
    INSPECTION_REPORT = "inspection.report"
