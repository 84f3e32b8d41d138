"""What the signs and the notice say, drawn from the configuration alone.

One place decides the words, so that the printed sign, the second-layer notice (PDF and HTML)
and the inspection pack cannot disagree: each renders these facts. Nothing here is typed
twice: the purposes are the cameras' own, the retention is what retention enforces, whether
faces are identified follows from the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from custodes.config import Config, LegalConfig
from custodes.privacy.policy import Action, Profile, allows

# The legal record's keys, in the order a sign or a report lists what is missing.
LEGAL_KEYS = ("controller", "contact", "legal_basis", "dpia_reference", "decision_reference",
              "notice_url")


class MissingLegalRecord(ValueError):
    """The config has no `legal` section: a sign without a controller is no sign."""

    def __init__(self) -> None:
        super().__init__(
            "the configuration has no `legal` section: add controller, contact, legal_basis, "
            f"dpia_reference, decision_reference and notice_url (keys: {', '.join(LEGAL_KEYS)})")


@dataclass(frozen=True)
class CameraLine:
    name: str
    location: str
    purpose: str
    retention_hours: float


@dataclass(frozen=True)
class SiteNotice:
    site: str  # id
    site_name: str
    address: str | None
    cameras: list[CameraLine]

    @property
    def purposes(self) -> list[str]:
        seen: list[str] = []
        for cam in self.cameras:
            if cam.purpose not in seen:
                seen.append(cam.purpose)
        return seen

    @property
    def retention_hours(self) -> float:
        """The longest any of the site's cameras keeps footage (what a visitor must assume)."""
        return max((c.retention_hours for c in self.cameras), default=0.0)


@dataclass(frozen=True)
class Notice:
    node: str
    profile: Profile
    legal: LegalConfig
    sites: list[SiteNotice]
    identification: bool  # may anyone be identified from the footage (face search)?
    ceiling_days: float

    @property
    def identification_text(self) -> str:
        if not self.identification:
            return ("No face recognition: nobody is identified from these cameras. Faces are "
                    "detected only to blur them in every picture that is shown or handed out.")
        return ("Face recognition is possible only inside a case opened for a stated legal "
                "reason and approved by a second, independent person; every search is "
                "recorded and can be inspected.")


def hours_text(hours: float) -> str:
    if hours >= 48 and hours % 24 == 0:
        return f"{hours / 24:g} days"
    return f"{hours:g} hours"


def notice_of(config: Config) -> Notice:
    """The facts of the signs; MissingLegalRecord without the config's `legal` section."""
    if config.legal is None:
        raise MissingLegalRecord
    sites = []
    for site_id, site in config.sites.items():
        cameras = [CameraLine(name, cam.location.value, cam.purpose,
                              config.retention_hours(name))
                   for name, cam in config.cameras.items()
                   if cam.site == site_id and cam.enabled]
        sites.append(SiteNotice(site_id, site.name, site.address, cameras))
    return Notice(
        node=config.node.name, profile=config.profile, legal=config.legal, sites=sites,
        identification=allows(config.profile, Action.SEARCH)
        or allows(config.profile, Action.WATCHLIST),
        ceiling_days=config.retention.ceiling_days,
    )
