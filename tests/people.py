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
from custodes.faces.photos import describe_photo, read_image
from custodes.vision.embedding import FaceEmbedder

F32 = npt.NDArray[np.float32]
SUBJECT = "Kim_Clijsters"
OTHER = "Gordon_Brown"


@dataclass(frozen=True)
class People:
    subject_photos: list[bytes]  # photos of SUBJECT given to the case
    same: list[F32]  # descriptors of other photos of SUBJECT
    other: list[F32]  # descriptors of photos of OTHER


def load_people(shared_data: Path, embedder: FaceEmbedder) -> People:
    root = shared_data / "faces"
    require((root / "labels.csv").is_file(), "faces/labels.csv")
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    def photos(identity: str) -> list[bytes]:
        return [(root / r["path"]).read_bytes() for r in rows if r["identity"] == identity]

    def vector(data: bytes) -> F32:
        return describe_photo(read_image(data), embedder=embedder).vector

    subject = photos(SUBJECT)
    require(len(subject) >= 8, f"8 photos of {SUBJECT}")
    return People(subject[:2], [vector(p) for p in subject[2:8]],
                  [vector(p) for p in photos(OTHER)[:4]])
