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
import struct
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
# Pixels a photo may declare. Checked from the header before decoding: a 1 MB PNG can declare
# 20000 x 20000 pixels, 1.2 GB once decoded. 40 Mpx is more than a phone camera's photo.
MAX_PIXELS: Final = 40_000_000
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
    """JPEG, PNG, WebP, BMP or GIF bytes to an RGB uint8 image, once ``check_photo`` passes
    them: nothing is decoded before the header's size is known to be reasonable."""
    check_photo(data)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PhotoError("the photo is not an image this node can read (JPEG, PNG, ...)")
    # In place: a second copy of a large photo is what the pixel cap is there to prevent.
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image), dtype=np.uint8)


def check_photo(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a photo from its header alone; PhotoError when it is empty, of an
    unknown format, or declares more than ``max_pixels`` (a decompression bomb)."""
    if not data:
        raise PhotoError("the photo is empty")
    width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise PhotoError(f"the photo declares a size of {width}x{height} pixels")
    if width * height > max_pixels:
        raise PhotoError(f"the photo is {width}x{height} pixels ({width * height / 1e6:.0f} Mpx): "
                         f"at most {max_pixels / 1e6:.0f} Mpx is accepted")
    return width, height


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image file's header alone, before any pixel is decoded (a small
    file can declare a picture that takes gigabytes to decode); PhotoError for formats not
    known here (JPEG, PNG, WebP, BMP and GIF are)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    raise PhotoError("not a JPEG, PNG, WebP, BMP or GIF image")


# JPEG start-of-frame markers (C0-CF) except DHT (C4), JPG (C8) and DAC (CC), which are not frames.
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise PhotoError("a damaged JPEG header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return int(width), int(height)
        if marker == 0xDA:  # image data began before any frame header
            break
        i += 2 + length
    raise PhotoError("a JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        return 1 + (((b[1] & 0x3F) << 8) | b[0]), \
            1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    raise PhotoError("a WebP of a kind not known here")


def reduced(image_rgb: U8) -> tuple[U8, float]:
    """The picture shrunk to at most MAX_SIDE pixels a side (as it is when smaller), and the
    factor it was shrunk by: faces of a photo stay far above what the descriptor needs, and
    the detector's cost grows with the pixels."""
    height, width = image_rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale == 1.0:
        return image_rgb, scale
    return np.asarray(cv2.resize(image_rgb, (round(width * scale), round(height * scale)),
                                 interpolation=cv2.INTER_AREA), dtype=np.uint8), scale


def unscaled(box: Box, scale: float) -> Box:
    """A box found in a `reduced` picture, in the original's pixels."""
    return Box.from_corners(box.x / scale, box.y / scale, box.right / scale,
                            box.bottom / scale)


def describe_photo(image_rgb: U8, *, embedder: FaceEmbedder | None = None) -> DescribedFace:
    """The one face in ``image_rgb``: descriptor, box and crop; PhotoError unless exactly one."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise PhotoError(f"expected an RGB uint8 image, got {image_rgb.dtype} {image_rgb.shape}")
    work, scale = reduced(image_rgb)
    faces = _detector().detect(work, min_size=MIN_FACE)
    if not faces:
        raise PhotoError(f"no face found in the photo (a face of at least {MIN_FACE} pixels "
                         "is needed)")
    if len(faces) > 1:
        raise PhotoError(f"{len(faces)} faces found in the photo; a reference photo must show "
                         "one person only (crop it to the person)")
    face = faces[0]
    vector = (embedder or _embedder()).embed(work, [face.dlib_shape()])[0]
    box = unscaled(face.box, scale)
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
