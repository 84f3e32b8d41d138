"""The calibrated meaning of a face distance: levels, per-track agreement, the sentence shown.

The figures themselves come from bench/identification.py (run by tests/test_benches.py); here
the levels' boundaries, the rules a track must meet and what a user is told are pinned.
"""

from __future__ import annotations

import math

import pytest

from custodes.faces import calibration
from custodes.faces.calibration import (
    MATCH_DISTANCE,
    POSSIBLE_DISTANCE,
    MatchLevel,
    level,
    meaning,
    track_level,
)
from custodes.vision.embedding import MATCH_THRESHOLD


def test_a_match_is_far_stricter_than_dlibs_verification_threshold() -> None:
    # Against 288 people, 54 % of strangers came within 0.6 (bench/identification.py): 0.6 can
    # only mean "possible", and the match level sits well inside it.
    assert POSSIBLE_DISTANCE == MATCH_THRESHOLD == 0.6
    assert MATCH_DISTANCE <= 0.42  # the 0.1 %-at-1000 threshold of the whole data was 0.418


@pytest.mark.parametrize(("distance", "expected"), [
    (0.0, MatchLevel.MATCH), (0.3999, MatchLevel.MATCH), (0.40, MatchLevel.POSSIBLE),
    (0.55, MatchLevel.POSSIBLE), (0.60, MatchLevel.POSSIBLE), (0.6001, MatchLevel.NONE),
    (1.2, MatchLevel.NONE), (math.nan, MatchLevel.NONE),
])
def test_level_of_one_distance(distance: float, expected: MatchLevel) -> None:
    assert level(distance) is expected


def test_only_a_match_may_name_a_subject() -> None:
    assert [lv for lv in MatchLevel if lv.names_subject] == [MatchLevel.MATCH]


@pytest.mark.parametrize(("distances", "expected"), [
    ([0.35], MatchLevel.MATCH),  # one stored descriptor: judged on its own (see track_level)
    ([0.35, 0.55], MatchLevel.POSSIBLE),  # one lucky frame does not name anyone
    ([0.35, 0.36, 0.55], MatchLevel.MATCH),  # two of three agree
    ([0.35, 0.36, 0.55, 0.58], MatchLevel.POSSIBLE),  # two of four is no majority
    ([0.35, 0.70, 0.80], MatchLevel.POSSIBLE),
    ([0.50, 0.59], MatchLevel.POSSIBLE),
    ([0.61, 0.9], MatchLevel.NONE),
    ([], MatchLevel.NONE),
])
def test_the_faces_of_a_track_must_agree(distances: list[float], expected: MatchLevel) -> None:
    assert track_level(distances) is expected


def test_the_sentences_carry_the_measured_figures() -> None:
    match = meaning(MatchLevel.MATCH)
    figures = calibration.FIGURES[MatchLevel.MATCH]
    assert "1000-person gallery" in match
    assert f"{100 * (1 - figures.fnir):.0f} % of true matches" in match
    assert "about 1 in 3,300 strangers" in match  # 0.03 %, two significant digits
    assert "confirm" in match
    possible = meaning(MatchLevel.POSSIBLE)
    assert "identifies nobody" in possible
    assert "54 % of strangers" in possible
    assert meaning(MatchLevel.NONE) == "Not a match (distance above 0.60)."
    assert calibration.describe(0.3) == (MatchLevel.MATCH, match)
