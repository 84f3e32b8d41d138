"""`custodes faces ...`: compare and detect faces in image files, for people who check results.

    custodes faces compare A.jpg B.jpg          # one JSON object: distance, level, meaning
    custodes faces compare --pairs pairs.csv    # path1,path2 per row; one JSON line per pair
    custodes faces detect IMG... [--compare REF.jpg]   # one JSON line per image

An investigator double-checking a hit, or anyone reproducing the accuracy figures, runs the
node's own detector and network on files and reads the calibrated level of a distance
(custodes.faces.calibration). These commands read only the files they are given: no node, no
database, no recording, so they need no sign-in and leave nothing in the audit log. Descriptors
live in memory for the run and are never printed or written.

Files come from anywhere, so the image's size is read from its header (JPEG, PNG, WebP, BMP,
GIF) before any pixel is decoded, and pictures over MAX_PIXELS are refused: a small file that
declares a huge picture would otherwise take gigabytes to decode. A file that cannot be read,
or (compare) holds no face, is an error: its message goes to stderr and the exit status is 2;
the other files of the run are still processed (and, for --pairs, keep their line).
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import typer

from custodes.commands import EXIT_INVALID, err
from custodes.faces.calibration import describe
from custodes.faces.photos import PhotoError, image_size, reduced, unscaled
from custodes.vision.embedding import FaceEmbedder
from custodes.vision.faces import Box, Face, FaceDetector

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

MAX_PIXELS: Final = 50_000_000  # ~50 Mpx: larger than any camera frame or phone photo
MAX_FILE_BYTES: Final = 200 * 1024 * 1024

faces_app = typer.Typer(help="Compare and detect faces in image files (no node, no sign-in).",
                        no_args_is_help=True)


# A file that cannot be used: unreadable, too large, or (where one is needed) no face. The
# same error as a reference photo's: the header check that raises it lives with the photos.
ImageError = PhotoError


# -- reading images safely ----------------------------------------------------------------------


def read_rgb(path: Path) -> U8:
    """The image as RGB uint8, after checking its declared size; ImageError otherwise."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read it ({exc.strerror or exc})") from None
    width, height = image_size(data)
    if width * height > MAX_PIXELS:
        raise ImageError(f"{width}x{height} is {width * height / 1e6:.0f} Mpx, over the "
                         f"{MAX_PIXELS / 1e6:.0f} Mpx this command decodes")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("not an image this node can decode")
    return np.ascontiguousarray(image[:, :, ::-1], dtype=np.uint8)


# -- faces in a file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundFace:
    box: Box  # in the file's own pixels
    score: float
    vector: F32


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    faces: tuple[FoundFace, ...]  # best detector score first

    def main_face(self) -> FoundFace:
        """The largest face: the one a photo of a person is about (others are background)."""
        if not self.faces:
            raise ImageError("no face found")
        return max(self.faces, key=lambda f: f.box.area)


@functools.cache
def _tools() -> tuple[FaceDetector, FaceEmbedder]:
    return FaceDetector(), FaceEmbedder("onnx", threads=1)


@functools.cache
def picture(path: Path) -> Picture:
    """Faces and descriptors of one file, once per run (pairs files repeat photos)."""
    rgb = read_rgb(path)
    height, width = rgb.shape[:2]
    work, scale = reduced(rgb)  # as reference photos are
    detector, embedder = _tools()
    faces: list[Face] = detector.detect(work)
    vectors = embedder.embed(work, [f.dlib_shape() for f in faces])
    return Picture(width, height, tuple(
        FoundFace(unscaled(f.box, scale), f.score, v)
        for f, v in zip(faces, vectors, strict=True)))


def _box(box: Box) -> list[int]:
    return [box.x, box.y, box.w, box.h]


def _judged(a: FoundFace, b: FoundFace) -> dict[str, Any]:
    distance = float(np.linalg.norm(a.vector - b.vector))
    found, sentence = describe(distance)
    return {"distance": round(distance, 4), "level": found.value, "meaning": sentence}


def compare_files(a: Path, b: Path) -> dict[str, Any]:
    """The JSON of one comparison: each photo's main face, the distance and its meaning."""
    sides = {}
    for key, path in (("a", a), ("b", b)):
        try:
            pic = picture(path)
            sides[key] = (pic, pic.main_face())
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None
    (pic_a, face_a), (pic_b, face_b) = sides["a"], sides["b"]
    return {
        "a": {"path": str(a), "box": _box(face_a.box), "faces_found": len(pic_a.faces)},
        "b": {"path": str(b), "box": _box(face_b.box), "faces_found": len(pic_b.faces)},
        **_judged(face_a, face_b),
    }


def detect_file(path: Path, reference: FoundFace | None) -> dict[str, Any]:
    pic = picture(path)
    faces = []
    for face in pic.faces:
        entry: dict[str, Any] = {"box": _box(face.box), "score": round(face.score, 4)}
        if reference is not None:
            entry.update(_judged(reference, face))
        faces.append(entry)
    return {"path": str(path), "width": pic.width, "height": pic.height, "faces": faces}


def _emit(obj: dict[str, Any]) -> None:
    # Plain stdout, not rich: a JSON line must not be wrapped or coloured.
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _fail(message: str) -> None:
    err.print(message, markup=False, highlight=False)


# -- the commands -------------------------------------------------------------------------------


def _pairs(csv_path: Path) -> list[tuple[Path, Path, dict[str, str]]]:
    """(path1, path2, the row's other columns); relative paths are from the CSV's folder."""
    try:
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"{csv_path}: cannot read it ({exc})") from None
    if not rows or not {"path1", "path2"} <= set(rows[0]):
        raise ImageError(f"{csv_path}: needs a header with the columns path1,path2")
    base = csv_path.parent
    return [(base / r["path1"], base / r["path2"],
             {k: v for k, v in r.items() if k not in ("path1", "path2") and k})
            for r in rows]  # base / an absolute path is that absolute path


@faces_app.command("compare")
def compare(
    photos: Annotated[list[Path] | None, typer.Argument(help="Two photos: A.jpg B.jpg")] = None,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="CSV with columns path1,path2 (relative to the CSV's folder or "
                        "absolute); prints one JSON line per pair", dir_okay=False)] = None,
) -> None:
    """Distance between the main faces of two photos and what it means (match, possible, none)."""
    if (pairs is None) == (not photos):
        raise typer.BadParameter("give two photos, or --pairs FILE.csv")
    if pairs is None:
        if photos is None or len(photos) != 2:
            raise typer.BadParameter("compare takes exactly two photos")
        try:
            _emit(compare_files(photos[0], photos[1]))
        except ImageError as exc:
            _fail(str(exc))
            raise typer.Exit(EXIT_INVALID) from None
        return
    try:
        todo = _pairs(pairs)
    except ImageError as exc:
        _fail(str(exc))
        raise typer.Exit(EXIT_INVALID) from None
    failed = 0
    for a, b, extra in todo:
        try:
            _emit({**compare_files(a, b), **extra})
        except ImageError as exc:
            failed += 1
            _fail(str(exc))
            _emit({"a": {"path": str(a)}, "b": {"path": str(b)}, "error": str(exc), **extra})
    if failed:
        _fail(f"{failed} of {len(todo)} pairs could not be compared")
        raise typer.Exit(EXIT_INVALID)


@faces_app.command("detect")
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files")],
    reference: Annotated[Path | None, typer.Option(
        "--compare", help="A photo of one person: every face found gets its distance to that "
                          "photo's main face, level and meaning", dir_okay=False)] = None,
) -> None:
    """Faces in each image (boxes, detector scores), one JSON line per image."""
    ref: FoundFace | None = None
    if reference is not None:
        try:
            ref = picture(reference).main_face()
        except ImageError as exc:
            _fail(f"{reference}: {exc}")
            raise typer.Exit(EXIT_INVALID) from None
    failed = 0
    for path in images:
        try:
            _emit(detect_file(path, ref))
        except ImageError as exc:
            failed += 1
            _fail(f"{path}: {exc}")
    if failed:
        raise typer.Exit(EXIT_INVALID)
