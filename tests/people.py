"""Real faces for the tests of cases, watchlist and their API: a subject and a stranger.

Kim Clijsters and Gordon Brown from the labelled photos in shared/data/faces: two photos of
the subject go to a case, the other photos become "recorded" faces.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from conftest import require
from custodes.faces.calibration import MatchLevel, level
from custodes.faces.photos import PhotoError, describe_photo, read_image
from custodes.vision.embedding import FaceEmbedder

F32 = npt.NDArray[np.float32]
SUBJECT = "Kim_Clijsters"
OTHER = "Gordon_Brown"


@dataclass(frozen=True)
class People:
    subject_photos: list[bytes]  # photos of SUBJECT given to the case
    same: list[F32]  # descriptors of other photos of SUBJECT
    other: list[F32]  # descriptors of photos of OTHER
    subject: list[F32]  # descriptors of subject_photos, as the case computes them

    def nearest_subject(self, vector: F32, photos: int = 2) -> float:
        """Distance from a face to the nearest of the case's (first ``photos``) subject photos."""
        return float(np.linalg.norm(np.stack(self.subject[:photos]) - vector, axis=1).min())

    def same_at(self, wanted: MatchLevel, photos: int = 2) -> list[F32]:
        """The subject's other photos whose calibrated level against a case given her first
        ``photos`` photos is ``wanted``: some photos of one person are only "possible"
        (0.40-0.60) against her others."""
        found = [v for v in self.same if level(self.nearest_subject(v, photos)) is wanted]
        require(bool(found), f"a photo of {SUBJECT} at level {wanted.value}")
        return found


def load_people(shared_data: Path, embedder: FaceEmbedder) -> People:
    root = shared_data / "faces"
    require((root / "labels.csv").is_file(), "faces/labels.csv")
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    def photos(identity: str) -> list[bytes]:
        return [(root / r["path"]).read_bytes() for r in rows if r["identity"] == identity]

    def described(identity: str) -> list[tuple[bytes, F32]]:
        # The CNN detector also finds the people at the edges of some LFW photos (a
        # Gordon_Brown photo shows three faces); a reference photo must show one person.
        found = []
        for data in photos(identity):
            try:
                found.append((data, describe_photo(read_image(data), embedder=embedder).vector))
            except PhotoError:
                continue
        return found

    subject = described(SUBJECT)
    require(len(subject) >= 8, f"8 photos of {SUBJECT}")
    return People([p for p, _ in subject[:2]], [v for _, v in subject[2:8]],
                  [v for _, v in described(OTHER)[:4]], [v for _, v in subject[:2]])
