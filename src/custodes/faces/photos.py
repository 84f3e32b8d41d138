"""A reference photo of one person: its face's descriptor and a crop of the face.

    face = describe_photo(read_image(upload_bytes))   # PhotoError unless exactly one face
    face.vector      # (128,) float32, comparable to the descriptors of face tracks
    face.crop_jpeg   # the face with some margin, JPEG, for an operator to confirm a match

Faces are found with the same detector as the analysis (CenterFace, dlib's 5-point landmarks)
and described with the same network, so a photo's descriptor and a camera's are comparable.
Very large photos are first reduced to MAX_SIDE, which keeps faces far above that size. Faces
smaller than MIN_FACE pixels are not counted: a reference photo's face must be describable, and
a tiny face in the background of a portrait must not make it "two people".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from custodes.vision.embedding import FaceEmbedder
from custodes.vision.faces import Box, FaceDetector

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

MAX_SIDE: Final = 1600  # larger photos are reduced to this before detection
MIN_FACE: Final = 40  # pixels (smaller side) for a face to count in a reference photo
CROP_MARGIN: Final = 0.3  # the crop grows the face box by this share of its size per side
CROP_QUALITY: Final = 90


class PhotoError(ValueError):
    """A photo that cannot serve as a reference: unreadable, or not exactly one face."""


@dataclass(frozen=True)
class DescribedFace:
    vector: F32  # (128,) float32
    box: Box  # the face in the photo's own pixel coordinates
    crop_jpeg: bytes  # the face with a margin, as JPEG


def read_image(data: bytes) -> U8:
    """JPEG or PNG (any format OpenCV reads) bytes to an RGB uint8 image."""
    if not data:
        raise PhotoError("the photo is empty")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PhotoError("the photo is not an image this node can read (JPEG, PNG, ...)")
    return np.ascontiguousarray(image[:, :, ::-1])


def describe_photo(image_rgb: U8, *, embedder: FaceEmbedder | None = None) -> DescribedFace:
    """The one face in ``image_rgb``: descriptor, box and crop; PhotoError unless exactly one."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise PhotoError(f"expected an RGB uint8 image, got {image_rgb.dtype} {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    work: U8 = image_rgb if scale == 1.0 else np.asarray(cv2.resize(
        image_rgb, (round(width * scale), round(height * scale)),
        interpolation=cv2.INTER_AREA), dtype=np.uint8)
    faces = _detector().detect(work, min_size=MIN_FACE)
    if not faces:
        raise PhotoError(f"no face found in the photo (a face of at least {MIN_FACE} pixels "
                         "is needed)")
    if len(faces) > 1:
        raise PhotoError(f"{len(faces)} faces found in the photo; a reference photo must show "
                         "one person only (crop it to the person)")
    face = faces[0]
    vector = (embedder or _embedder()).embed(work, [face.dlib_shape()])[0]
    box = Box.from_corners(face.box.x / scale, face.box.y / scale,
                           face.box.right / scale, face.box.bottom / scale)
    return DescribedFace(np.ascontiguousarray(vector, dtype=np.float32), box,
                         _crop_jpeg(image_rgb, box))


def _crop_jpeg(image_rgb: U8, box: Box) -> bytes:
    height, width = image_rgb.shape[:2]
    crop = box.expand(CROP_MARGIN).clip(width, height)
    pixels = np.ascontiguousarray(image_rgb[crop.y:crop.bottom, crop.x:crop.right, ::-1])
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
    if not ok:
        raise PhotoError("the face crop could not be encoded")
    return encoded.tobytes()


@functools.cache
def _detector() -> FaceDetector:
    return FaceDetector()  # thread-safe: the network is, its landmark model runs under a lock


@functools.cache
def _embedder() -> FaceEmbedder:
    return FaceEmbedder()
