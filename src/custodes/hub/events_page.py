"""The filters of the hub's events page, read from its query string.

Times are typed as the node's pages take them: ISO 8601, 24-hour, ``YYYY-MM-DD HH:MM[:SS]``
(a ``T`` between date and time is fine too), in the zone the page names: the chosen site's, or
the one zone every site in the chosen group (or the fleet) reports, else UTC. A time with its
own offset (``...+02:00``, ``...Z``) is taken as written. Anything that does not parse is
refused with the reason, never guessed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from custodes.events.types import EventKind
from custodes.hub.fleet import EventFilter, zone_of
from custodes.sitetime import SiteZone

MAX_FIELD = 200  # no filter value is longer; a longer one is not a typing mistake


class FilterError(ValueError):
    """A filter that cannot be read: the page says why (400)."""


def filter_zone(choices: dict[str, Any], group: str | None, site: str | None) -> SiteZone:
    """The zone the page's times are typed in: the site's, else the one its scope shares."""
    zones: dict[str, str] = choices["zones"]
    if site is not None and site in zones:
        return zone_of(zones[site])
    scope = choices["groups"].get(group, []) if group is not None else list(zones)
    found = {zones[name] for name in scope}
    return zone_of(found.pop() if len(found) == 1 else None)


def parse_time(text: str, zone: SiteZone, what: str) -> float:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{what}: {text!r} is not a time as YYYY-MM-DD HH:MM:SS "
                          f"(24-hour, {zone.name})") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=zone.zone)
    try:
        return t.timestamp()
    except (OverflowError, OSError, ValueError) as exc:
        raise FilterError(f"{what}: {text!r} is out of range ({exc})") from None


def parse(asked: dict[str, str], before: str | None, zone: SiteZone,
          groups: list[str] | None = None) -> EventFilter:
    """The filter for ``asked`` (names as in the form, values stripped, empty ones left out),
    within the user's ``groups`` (None: every group): a filter narrows, never widens."""
    for key, value in asked.items():
        if len(value) > MAX_FIELD:
            raise FilterError(f"{key}: longer than {MAX_FIELD} characters")
    kind = None
    if "kind" in asked:
        try:
            kind = EventKind(asked["kind"])
        except ValueError:
            raise FilterError(f"kind: {asked['kind']!r} is not one of "
                              f"{', '.join(k.value for k in EventKind)}") from None
    start = parse_time(asked["start"], zone, "from") if "start" in asked else None
    end = parse_time(asked["end"], zone, "to") if "end" in asked else None
    if start is not None and end is not None and end <= start:
        raise FilterError("the end of the time range is not after its start")
    return EventFilter(groups=groups, group=asked.get("group"), site=asked.get("site"),
                       camera=asked.get("camera"), kind=kind, start=start, end=end,
                       before=None if before is None else _before(before))


def _before(text: str) -> tuple[float, str, int]:
    """The key of the last event of the previous page (``EventRow.key``)."""
    try:
        at, site, seq = text.split(":")
        key = (float(at), site, int(seq))
    except ValueError:
        raise FilterError(f"before: {text[:80]!r} is not a page key") from None
    if key[0] != key[0] or len(site) > MAX_FIELD:  # NaN compares unequal to itself
        raise FilterError(f"before: {text[:80]!r} is not a page key")
    return key
