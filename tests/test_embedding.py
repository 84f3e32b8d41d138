"""The fast face-embedding backends give dlib's descriptors, on real face photos."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import dlib  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pytest

from custodes.vision.dlib_resnet import DlibModelError, load_resnet, parse_resnet
from custodes.vision.embedding import CHIP_SIZE, Backend, FaceEmbedder, FaceShape
from custodes.vision.weights import face_model_files

TOLERANCE = 1e-3  # per descriptor element, against dlib's compute_face_descriptor
SAMPLE_EVERY = 16  # of the 640 labelled photos: ~40 faces, ~3 s of dlib reference time


@dataclass
class Face:
    image: npt.NDArray[np.uint8]
    shape: FaceShape


class Finder:
    """dlib's HOG detector and 5-point landmarks: the largest face in a photo."""

    def __init__(self) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_model_files().shape_predictor_5))

    def face(self, path: Path) -> Face | None:
        try:
            image = dlib.load_rgb_image(str(path))
        except RuntimeError:  # a few ".jpg" files in the data are WebP, which dlib cannot read
            return None
        boxes = self.detector(image, 1)  # upsample once: LFW faces are ~100 px
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.area())
        return Face(image, self.predictor(image, box))


@pytest.fixture(scope="module")
def finder() -> Finder:
    return Finder()


@pytest.fixture(scope="module")
def faces(shared_data: Path, finder: Finder) -> list[Face]:
    root = shared_data / "faces"
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[::SAMPLE_EVERY]
    found = [face for row in rows if (face := finder.face(root / row["path"])) is not None]
    assert len(found) >= 30, "the HOG detector should find most of these faces"
    return found


@pytest.fixture(scope="module")
def dlib_descriptors(faces: list[Face]) -> npt.NDArray[np.float32]:
    """The reference: dlib's own call, on the whole image, as everyone uses it."""
    model = dlib.face_recognition_model_v1(str(face_model_files().resnet))
    return np.array([np.asarray(model.compute_face_descriptor(f.image, f.shape, 0))
                     for f in faces], dtype=np.float32)


@pytest.mark.parametrize("backend", ["onnx", "numpy"])
def test_port_equals_dlib(backend: Backend, faces: list[Face],
                          dlib_descriptors: npt.NDArray[np.float32]) -> None:
    # Some faces through embed(image, shapes), the rest as one embed_chips call whose size
    # is not a multiple of the batch size.
    embedder = FaceEmbedder(backend, batch_size=7)
    ours = np.concatenate([embedder.embed(f.image, [f.shape]) for f in faces[:5]]
                          + [embedder.embed_chips(np.stack(
                              [embedder.extract_chips(f.image, [f.shape])[0]
                               for f in faces[5:]]))])
    assert ours.shape == dlib_descriptors.shape
    assert ours.dtype == np.float32
    worst = float(np.abs(ours - dlib_descriptors).max())
    assert worst <= TOLERANCE, f"{backend} differs from dlib by up to {worst}"


def test_dlib_backend_is_dlib(faces: list[Face],
                              dlib_descriptors: npt.NDArray[np.float32]) -> None:
    embedder = FaceEmbedder("dlib")  # 73 ms a face: two faces are enough
    ours = np.concatenate([embedder.embed(f.image, [f.shape]) for f in faces[:2]])
    assert np.abs(ours - dlib_descriptors[:2]).max() <= 1e-6


def test_same_person_closer_than_different_people(shared_data: Path, finder: Finder) -> None:
    root = shared_data / "faces"
    with (root / "lfw_pairs.csv").open(newline="") as f:
        pairs = list(csv.DictReader(f))
    chosen = [p for p in pairs if p["same"] == "1"][:3] + [p for p in pairs if p["same"] == "0"][:3]
    embedder = FaceEmbedder("onnx")
    same: list[float] = []
    different: list[float] = []
    for pair in chosen:
        a, b = finder.face(root / pair["path1"]), finder.face(root / pair["path2"])
        assert a is not None
        assert b is not None
        va, vb = embedder.embed(a.image, [a.shape])[0], embedder.embed(b.image, [b.shape])[0]
        (same if pair["same"] == "1" else different).append(float(np.linalg.norm(va - vb)))
    assert max(same) < 0.6 < min(different), (same, different)


def test_batches_and_empty_input(faces: list[Face]) -> None:
    embedder = FaceEmbedder("onnx", batch_size=3)
    chips = np.stack([embedder.extract_chips(f.image, [f.shape])[0] for f in faces[:7]])
    one_batch = FaceEmbedder("onnx", batch_size=16).embed_chips(chips)
    assert np.abs(embedder.embed_chips(chips) - one_batch).max() < 1e-5
    assert embedder.embed(faces[0].image, []).shape == (0, 128)
    assert embedder.embed_chips(chips[:0]).shape == (0, 128)
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed_chips(chips.astype(np.float32))
    with pytest.raises(ValueError, match="chips must be"):
        embedder.embed_chips(chips[:, :CHIP_SIZE - 1])


def test_loader_reads_anet_type_and_refuses_other_files() -> None:
    path = face_model_files().resnet
    weights = load_resnet(path)
    assert weights.chip_size == 150
    assert len(weights.blocks) == 14
    assert weights.fc.shape == (256, 128)
    data = path.read_bytes()
    with pytest.raises(DlibModelError, match="file ends"):
        parse_resnet(data[:-1000])
    with pytest.raises(DlibModelError, match="relu_"):
        parse_resnet(data.replace(b"relu_", b"relu0", 1))
