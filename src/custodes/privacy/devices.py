"""The profile's device policy: no pictures on phones and small screens where the profile says so.

The agency's rule for schools: pictures must not be transmittable to phones or other devices.
A server cannot know what a client is; it can only read what the client says about itself:

- ``Sec-CH-UA-Mobile: ?1``, the client hint Chromium-based browsers send on every request;
- a ``User-Agent`` that names a phone or tablet (iPhone, Android ... Mobile, and the like);
- the screen size the page's script reports in the ``custodes_screen`` cookie (CSS pixels).

All three are under the client's control: a phone can claim to be a desktop. This is a policy
aid that keeps honest phones (the caretaker's own, a browser left on "mobile site") from
showing footage, not a security boundary; the README says so. What stands between footage and
a phone is the role, the camera limits and the audit log, which records every refusal here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from custodes.privacy.policy import Profile, pictures_on_small_clients

SCREEN_COOKIE: Final = "custodes_screen"
# A phone's screen is at most about 480 CSS px on its short side (tablets start near 600);
# the short side, so that a phone held sideways is still a phone.
SMALL_SCREEN: Final = 600
_SCREEN = re.compile(r"^(\d{2,5})x(\d{2,5})$")
# The words phone and tablet browsers put in their User-Agent; "Mobi" is Mozilla's own advice
# for detecting a mobile browser, the rest catch tablets and older phones.
_MOBILE_UA = re.compile(
    r"Mobi|Android|iPhone|iPad|iPod|Windows Phone|BlackBerry|BB10|Opera Mini|IEMobile|Silk"
    r"|KAIOS", re.IGNORECASE)


class ClientKind(StrEnum):
    DESKTOP = "desktop"  # nothing says otherwise (also: API clients, scripts)
    MOBILE = "mobile"  # the browser says it runs on a phone or tablet
    SMALL_SCREEN = "small-screen"  # the page measured a phone-sized screen


@dataclass(frozen=True)
class ClientSeen:
    kind: ClientKind
    evidence: str  # what the client sent that made it so, for the refusal and the audit log


def classify(headers: Mapping[str, str], cookies: Mapping[str, str]) -> ClientSeen:
    """What the request says about the device it comes from."""
    if headers.get("sec-ch-ua-mobile", "").strip() == "?1":
        return ClientSeen(ClientKind.MOBILE, "the browser's Sec-CH-UA-Mobile hint says mobile")
    agent = headers.get("user-agent", "")
    if (found := _MOBILE_UA.search(agent)) is not None:
        return ClientSeen(ClientKind.MOBILE,
                          f"the browser's User-Agent names a mobile device ({found.group(0)})")
    screen = _SCREEN.match(cookies.get(SCREEN_COOKIE, "").strip())
    if screen is not None:
        width, height = int(screen.group(1)), int(screen.group(2))
        if min(width, height) < SMALL_SCREEN:
            return ClientSeen(ClientKind.SMALL_SCREEN,
                              f"the page measured a {width}x{height} screen, narrower than "
                              f"{SMALL_SCREEN} CSS pixels")
    return ClientSeen(ClientKind.DESKTOP, "nothing in the request names a phone or small screen")


def picture_refusal(profile: Profile, seen: ClientSeen) -> str | None:
    """Why no picture may go to this client under ``profile``, or None when it may."""
    if seen.kind is ClientKind.DESKTOP or pictures_on_small_clients(profile):
        return None
    return (f"the {profile.value} profile shows no video or pictures on phones and small "
            f"screens, and {seen.evidence}")
