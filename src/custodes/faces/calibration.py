"""What a face distance means to the person who reads it: match, possible, or nothing.

    level(0.37)                  # MatchLevel.MATCH
    level(0.52)                  # MatchLevel.POSSIBLE: ranked for a person to look at, no name
    meaning(MatchLevel.MATCH)    # the calibrated sentence shown beside the hit
    track_level([0.38, 0.39])    # several faces of one track must agree

Why two levels. dlib's 0.6 answers "are these two photos one person?" (~99 % right on LFW
pairs), but a case search or a watchlist asks "is this face one of N people?": a stranger gets N
chances to fall under the threshold. bench/identification.py measured it on the 640 shared
photos (289 people, one enrolment photo each, probe photos disjoint, 20 random galleries per
size): at 0.6 a stranger was named as a gallery person in 4.2 % of searches against 10 people,
30 % against 100 and 54 % against 288; extrapolated to 1000 people, nearly always. So 0.6 can
only mean "worth a look", never a name.

MATCH_DISTANCE is where a stranger is named in at most 0.1 % of searches against a 1000-person
gallery. No 1000-person gallery can be built from 289 people: the figure extrapolates the
single-comparison false match rate (a normal fitted to the lower tail of the 203k
different-person distances; checked against the measured 10-, 100- and 288-person galleries,
where it runs a little pessimistic). Thresholds tuned that way on half the identities ranged
0.38-0.44 over 20 splits (median 0.42; the whole data give 0.418). 0.40 is taken, below the
median, because a threshold tuned on one half overshot on the other (held-out FPIR at 1000:
0.28 % on average); at 0.40 the held-out halves give 0.07 % on average, 0.41 % at worst, and no
stranger was named in any measured gallery (up to 288 people). The price: from one photo, only
~39 % of the people truly in the gallery come out as a match; most of the rest are "possible".

Limits of the calibration, stated where the sentence is shown: the photos are LFW-style press
photos (frontal, sharp, 250x250), better than most CCTV, so real error rates are higher; the
closest different-person pairs are all East Asian men (dlib's network is known to separate
some groups less well), so a stranger's risk is not the same for everyone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from custodes.vision.embedding import MATCH_THRESHOLD


class MatchLevel(StrEnum):
    MATCH = "match"  # may be shown with the subject's name and raised as an alert
    POSSIBLE = "possible"  # ranked for a person to compare; never shown as a name
    NONE = "none"

    @property
    def names_subject(self) -> bool:
        """Whether a hit of this level may be shown as a person (name, label, photo)."""
        return self is MatchLevel.MATCH


# Below this a face is a match (see the module doc: FPIR <= 0.1 % at 1000 people, extrapolated).
MATCH_DISTANCE: Final = 0.40
# Up to this a face is a possible match: dlib's verification threshold, the old single cut.
POSSIBLE_DISTANCE: Final = MATCH_THRESHOLD
# Per track: a match needs at least this many of its faces at match level, and most of them.
MIN_AGREEING: Final = 2


@dataclass(frozen=True)
class Figures:
    """What bench/identification.py measured at one level's distance (all identities)."""

    distance: float
    gallery: int  # the largest gallery measured (all but the stranger's own identity)
    fpir_measured: float  # strangers named, measured against `gallery` people
    fpir_1000: float  # strangers named against 1000 people, extrapolated (tail fit)
    fnir: float  # gallery people not found as themselves at this distance (one enrol photo)


PHOTOS: Final = 640
PEOPLE: Final = 289
STRANGER_SEARCHES: Final = 12_800  # 20 random galleries for each of the 640 photos
# bench/identification.py, 2026-12-01, 20 repeats, seed 9 (see the report in its output).
FIGURES: Final[dict[MatchLevel, Figures]] = {
    MatchLevel.MATCH: Figures(MATCH_DISTANCE, 288, fpir_measured=0.0, fpir_1000=0.0003,
                              fnir=0.607),
    MatchLevel.POSSIBLE: Figures(POSSIBLE_DISTANCE, 288, fpir_measured=0.541, fpir_1000=0.985,
                                 fnir=0.032),
}


def level(distance: float) -> MatchLevel:
    """The level of one comparison (Euclidean distance between two dlib descriptors)."""
    if math.isnan(distance):
        return MatchLevel.NONE
    if distance < MATCH_DISTANCE:
        return MatchLevel.MATCH
    # Inclusive: the descriptor search's own cut (max_distance) returns hits at exactly 0.6.
    if distance <= POSSIBLE_DISTANCE:
        return MatchLevel.POSSIBLE
    return MatchLevel.NONE


def track_level(distances: Sequence[float]) -> MatchLevel:
    """The level of a track from the distances of several of its faces to one person.

    A match needs MIN_AGREEING faces and a majority of them at match level: one lucky frame
    (a blur, a turned head that happens to sit near someone's descriptor) does not name anyone.
    A track with a single face is judged on that face alone: the calibration above is exactly a
    one-photo-against-one-photo comparison, so its figures hold for it as they stand.
    """
    if not distances:
        return MatchLevel.NONE
    levels = [level(d) for d in distances]
    matches = levels.count(MatchLevel.MATCH)
    if len(levels) == 1:
        return levels[0]
    if matches >= MIN_AGREEING and 2 * matches > len(levels):
        return MatchLevel.MATCH
    if matches or MatchLevel.POSSIBLE in levels:
        return MatchLevel.POSSIBLE
    return MatchLevel.NONE


def _one_in(rate: float) -> str:
    """0.0003 -> 'about 1 in 3,000' (two significant digits are all the data can carry)."""
    n = 1.0 / rate
    rounded = round(n, -max(0, math.floor(math.log10(n)) - 1))
    return f"about 1 in {rounded:,.0f}"


def meaning(of: MatchLevel) -> str:
    """The calibrated sentence shown beside a hit or an alert of this level."""
    if of is MatchLevel.MATCH:
        f = FIGURES[MatchLevel.MATCH]
        return (f"Match (distance below {f.distance:.2f}). Calibrated on {PHOTOS} press photos "
                f"of {PEOPLE} people: at this level {_one_in(f.fpir_1000)} strangers would be "
                f"named against a 1000-person gallery (extrapolated; in {STRANGER_SEARCHES:,} "
                f"searches with {PHOTOS} photos against {f.gallery} people, none was), and "
                f"{100 * (1 - f.fnir):.0f} % of true matches from one photo reach it. Camera "
                "footage is usually worse than press photos, and the rate is not the same for "
                "everyone: a person must confirm it against the footage.")
    if of is MatchLevel.POSSIBLE:
        f = FIGURES[MatchLevel.POSSIBLE]
        return (f"Possible match only (distance {MATCH_DISTANCE:.2f} to "
                f"{f.distance:.2f}): at this level {100 * f.fpir_measured:.0f} % of strangers "
                f"were named against a {f.gallery}-person gallery, so it identifies nobody. "
                "Ranked for a person to compare with the footage.")
    return f"Not a match (distance above {POSSIBLE_DISTANCE:.2f})."


def no_hit_meaning() -> str:
    """The calibrated sentence for a search that compared faces and found none near enough:
    what that absence does, and does not, say."""
    f = FIGURES[MatchLevel.POSSIBLE]
    return (f"None is within {f.distance:.2f} of a subject, not even a possible match. That "
            f"is no proof of absence: calibrated on {PHOTOS} press photos, "
            f"{100 * f.fnir:.0f} % of people were not found as themselves even at this "
            "distance from one photo, and camera footage (turned heads, blur, small faces) is "
            "usually worse.")


def describe(distance: float) -> tuple[MatchLevel, str]:
    """(level, meaning) of one distance, as API responses and commands carry them."""
    found = level(distance)
    return found, meaning(found)
