"""The site's time zone: the database, the audit log and every API keep UTC epoch seconds;
people read and type the site's local time.

``node.timezone`` names the zone (an IANA name such as ``Europe/Oslo``). Left out, the
machine's own zone is used, the one its installer set for the place it stands (``TZ``, then
``/etc/timezone``, then the ``/etc/localtime`` link); a machine whose zone cannot be named is
shown in UTC, and the system page says so. Pages pass the zone name to the browser, which
formats with it whatever zone the viewer's own computer is set to.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

LOCALTIME = Path("/etc/localtime")
TIMEZONE_FILE = Path("/etc/timezone")


class ZoneSource(StrEnum):
    CONFIG = "config"  # node.timezone
    MACHINE = "machine"  # the machine's zone, node.timezone left out
    FALLBACK = "fallback"  # neither: UTC


def check_zone_name(name: str) -> str:
    """``name`` if it is an IANA zone name this machine knows; ValueError saying why not."""
    if name not in _known_zones():
        hint = " (an IANA name such as Europe/Oslo; abbreviations like CET or EST are " \
               "ambiguous)" if "/" not in name else ""
        raise ValueError(f"unknown time zone {name!r}{hint}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"time zone {name!r} cannot be loaded: {exc}") from None
    return name


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def machine_zone_name(env: dict[str, str] | None = None) -> str | None:
    """The IANA name of this machine's zone, or None when it cannot be named."""
    environ = os.environ if env is None else env
    candidates = [environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(TIMEZONE_FILE.read_text(encoding="utf-8").strip())
    try:
        target = str(LOCALTIME.resolve())
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        candidates.append(target.split("/zoneinfo/", 1)[1])
    for name in candidates:
        if not name:
            continue
        try:
            return check_zone_name(name)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class SiteZone:
    """The zone times are shown in, and where that choice came from."""

    name: str
    source: ZoneSource

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.name)

    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC).astimezone(self.zone)

    def text(self, t: float | None, *, zone: bool = False) -> str:
        """``YYYY-MM-DD HH:MM:SS`` in the site's zone (24-hour), with the zone name if asked."""
        if t is None:
            return "—"
        shown = self.local(t).strftime("%Y-%m-%d %H:%M:%S")
        return f"{shown} {self.name}" if zone else shown

    def offset_text(self, t: float) -> str:
        """The UTC offset at ``t``, e.g. ``UTC+02:00``."""
        offset = self.local(t).utcoffset() or timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

    def day_of(self, t: float) -> date:
        return self.local(t).date()

    def day_range(self, day: date) -> tuple[float, float]:
        """The UTC epoch seconds of the site's local midnight starting ``day`` and the next:
        23 or 25 hours apart on the days the clocks change. OverflowError past year 9999."""
        first = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        after = day + timedelta(days=1)
        following = datetime(after.year, after.month, after.day, tzinfo=self.zone)
        return first.timestamp(), following.timestamp()

    def describe(self) -> str:
        """For the system page: the zone and why it is the one."""
        why = {
            ZoneSource.CONFIG: "set by node.timezone",
            ZoneSource.MACHINE: "the machine's zone (node.timezone is not set)",
            ZoneSource.FALLBACK: "node.timezone is not set and the machine's zone cannot be "
                                 "named: set node.timezone",
        }[self.source]
        return f"{self.name} ({why})"


@cache
def site_zone(configured: str | None) -> SiteZone:
    """The zone for a node whose ``node.timezone`` is ``configured`` (None: not set)."""
    if configured is not None:
        return SiteZone(check_zone_name(configured), ZoneSource.CONFIG)
    machine = machine_zone_name()
    if machine is not None:
        return SiteZone(machine, ZoneSource.MACHINE)
    return SiteZone("UTC", ZoneSource.FALLBACK)
