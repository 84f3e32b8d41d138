"""Deployment profiles: which biometric actions a deployment may take at all.

A profile is declared once per deployment (``profile:`` in the config) and decides, in code,
what no user of that deployment can do, whatever their role. Roles (custodes.auth.roles) decide
who may do what the profile allows; cases (custodes.privacy.cases) decide when.

No profile has any action for emotion, expression, age, gender or other attribute inference:
there is no such code in custodes, so there is nothing to switch on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Profile(StrEnum):
    SCHOOL = "school"  # detection only to blur; no identification of anyone
    MUNICIPAL = "municipal"  # face search inside an approved case; no live watchlist
    POLICE = "police"  # face search and live watchlist, each inside an approved case


class Action(StrEnum):
    """Biometric actions a profile may allow (each one also needs a role, most a case)."""

    EMBED = "embed"  # compute and store face descriptors of people on camera
    ENROLL = "enroll"  # add a person to the gallery
    SEARCH = "search"  # search recordings for a case subject's face
    WATCHLIST = "watchlist"  # live alerts when a case subject appears
    SUBJECT_ACCESS = "subject_access"  # export a requester's own footage, others blurred


_ALLOWED: dict[Profile, frozenset[Action]] = {
    # Subject access needs no descriptor store: the requester's photo is matched against the
    # faces in one exported range and forgotten, so even a school can answer an access request.
    Profile.SCHOOL: frozenset({Action.SUBJECT_ACCESS}),
    Profile.MUNICIPAL: frozenset(
        {Action.EMBED, Action.ENROLL, Action.SEARCH, Action.SUBJECT_ACCESS}
    ),
    Profile.POLICE: frozenset(Action),
}

DAY = 86400.0


@dataclass(frozen=True)
class Limits:
    """How far one case or one subject access request may reach under a profile.

    Fixed in code per profile, not read from the config: the administrator of the box is one
    of the people these limits hold against, and a config is theirs to edit.
    """

    case_days: float  # the longest a case may run, from now to its expiry (0: no cases)
    case_scope_days: float  # the longest span of footage one case covers
    case_cameras: int  # cameras in one case's scope
    access_seconds: float  # footage one subject access request covers (one camera)
    access_per_requester: int  # requests for one person within access_period_days
    access_per_officer: int  # requests one officer records within access_period_days
    access_period_days: float
    access_valid_days: float  # a request not exported by then lapses; its photo is wiped


LIMITS: dict[Profile, Limits] = {
    # A school identifies nobody: no cases at all, and subject access answers a pupil or a
    # parent about one short span, a few times a month at most.
    Profile.SCHOOL: Limits(case_days=0, case_scope_days=0, case_cameras=0,
                           access_seconds=2 * 3600, access_per_requester=2,
                           access_per_officer=10, access_period_days=30, access_valid_days=14),
    Profile.MUNICIPAL: Limits(case_days=90, case_scope_days=31, case_cameras=16,
                              access_seconds=6 * 3600, access_per_requester=4,
                              access_per_officer=30, access_period_days=30,
                              access_valid_days=30),
    Profile.POLICE: Limits(case_days=180, case_scope_days=92, case_cameras=32,
                           access_seconds=6 * 3600, access_per_requester=4,
                           access_per_officer=30, access_period_days=30, access_valid_days=30),
}


def limits(profile: Profile) -> Limits:
    return LIMITS[profile]


# Whether video and pictures may be shown on phones and small screens (custodes.privacy.
# devices). The agency: pictures must not be transmittable to phones, in schools and in
# municipal buildings alike; police officers work from phones and tablets in the field. Fixed
# per profile for the same reason as the limits above.
_PICTURES_ON_SMALL_CLIENTS: dict[Profile, bool] = {
    Profile.SCHOOL: False, Profile.MUNICIPAL: False, Profile.POLICE: True,
}


def pictures_on_small_clients(profile: Profile) -> bool:
    return _PICTURES_ON_SMALL_CLIENTS[profile]


# The privacy agency: cameras in schools only in corridors and entrances (and outside).
SCHOOL_LOCATIONS = frozenset({"corridor", "entrance", "exterior"})


class Refused(Exception):
    """An action the deployment's profile (or a case, or a role) does not allow."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action} refused: {reason}")
        self.action = action
        self.reason = reason


def allows(profile: Profile, action: Action) -> bool:
    return action in _ALLOWED[profile]


def require(profile: Profile, action: Action) -> None:
    """Raise Refused unless ``profile`` allows ``action`` at all."""
    if not allows(profile, action):
        raise Refused(action.value, f"the {profile.value} profile does not allow {action.value}")


def placement_problem(profile: Profile, location: str) -> str | None:
    """Why a camera at ``location`` may not exist under ``profile``, or None when it may."""
    if profile is Profile.SCHOOL and location not in SCHOOL_LOCATIONS:
        allowed = ", ".join(sorted(SCHOOL_LOCATIONS))
        return (
            f"a {location} camera is not allowed in the school profile "
            f"(only {allowed})"
        )
    return None
