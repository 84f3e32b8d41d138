"""Irreversible blurring of faces and privacy zones in pictures that leave the recorder.

A plain Gaussian blur can be partly undone (deconvolution), and a light one leaves a face
recognisable. Here each region is first pixelated, averaged down to a coarse grid of about
PIXELS_ACROSS_FACE blocks across the face, which discards the detail for good; the blur after
it only hides the block edges, so the result does not look like a mosaic that invites guessing.

All functions return a new image and leave their input unchanged.

Costs on the 2-core box: `blur_regions` ~2 ms for a 640x360 picture with one face;
`redact_snapshot` is dominated by its face detection (`custodes.redaction.detect`), which scans
the whole picture finely enough for small faces (HOG ~0.2-0.25 s for 640x360 at upsample 2,
plus ~0.5 s for the Haar cascades that find turned faces); `encode_jpeg` ~0.4 ms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from custodes.redaction.detect import RedactionDetector
from custodes.vision.faces import Box

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Polygon = Sequence[tuple[float, float]]

PIXELS_ACROSS_FACE: Final = 6  # blocks across a face: identity is gone, a face is still seen
ZONE_BLOCKS_ACROSS: Final = 32  # blocks across the image in a privacy zone


def blur_regions(image: U8, boxes: Iterable[Box], *, margin: float = 0.25,
                 ellipse: bool = True) -> U8:
    """A copy of an RGB (or grey) image with each box pixelated, then blurred.

    Each box grows by `margin` of its size on every side first (detector boxes cut through
    hair, ears and chin). With `ellipse` only the ellipse inscribed in the grown box changes,
    which looks like a face and still covers the box's corners at margin >= 0.25 (a corner
    lies at (0.5 / 0.75) ** 2 * 2 = 0.89 of the ellipse's radius); otherwise the whole
    rectangle does.
    """
    out = image.copy()
    height, width = image.shape[:2]
    for box in boxes:
        region = box.expand(margin).clip(width, height)
        if region.area == 0:
            continue
        block = max(2, math.ceil(max(box.w, box.h) / PIXELS_ACROSS_FACE))
        patch = out[region.y:region.bottom, region.x:region.right]
        obscured = _obscure(patch, block)
        if ellipse:
            mask = np.zeros(patch.shape[:2], dtype=np.uint8)
            cv2.ellipse(mask, (region.w // 2, region.h // 2), (region.w // 2, region.h // 2),
                        0, 0, 360, 255, thickness=-1)
            patch[mask > 0] = obscured[mask > 0]
        else:
            patch[...] = obscured
    return out


def blur_polygons(image: U8, polygons: Iterable[Polygon]) -> U8:
    """A copy of the image with privacy zones obscured; points are (x, y) in 0..1 of the image.

    Zones are pixelated to ZONE_BLOCKS_ACROSS blocks across the whole image, then blurred:
    coarse enough that nobody in them can be recognised, fine enough to still show that
    something is there.
    """
    out = image.copy()
    height, width = image.shape[:2]
    scale = np.array([width, height], dtype=np.float64)
    mask = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        points = np.round(np.asarray(polygon, dtype=np.float64) * scale).astype(np.int32)
        if len(points) >= 3:
            cv2.fillPoly(mask, [points], 255)
    if mask.any():
        obscured = _obscure(image, max(2, math.ceil(width / ZONE_BLOCKS_ACROSS)))
        out[mask > 0] = obscured[mask > 0]
    return out


def redact_snapshot(image_rgb: U8, detector: RedactionDetector, known: Iterable[Box] = (), *,
                    upsample: int | None = None, zones: Sequence[Polygon] = ()) -> U8:
    """A copy of an RGB snapshot with every face the detector finds blurred, plus `known`,
    and the privacy `zones` (see `blur_polygons`).

    The whole picture is scanned by the redaction detector (HOG, frontal faces, with the Haar
    cascades for turned ones and profiles), HOG by default (`upsample` None) at the upsample
    that finds faces down to ~1/18 of its height (see `snapshot_upsample`). `known` adds boxes
    the caller already has (the tracker's predicted boxes), which covers faces the detector
    misses in this one picture. Faces of any size are blurred.
    """
    grey = np.asarray(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    up = snapshot_upsample(grey.shape[0], grey.shape[1]) if upsample is None else upsample
    found = detector.boxes(grey, up)
    boxes = [*found, *known]
    log.debug("redacting %d faces (%d detected)", len(boxes), len(found))
    redacted = blur_regions(image_rgb, boxes)
    return blur_polygons(redacted, zones) if zones else redacted


def snapshot_upsample(height: int, width: int) -> int:
    """The upsample that finds faces down to ~1/18 of a picture's shorter side.

    A 20 px face in a 640x360 sub-stream picture (a class photo, an audience) needs upsample 2
    (~0.25 s); the same scene in a 1080p picture has 60 px faces (upsample 1), and in a 4-5 MP
    main-stream picture 80 px and more (upsample 0). The cost stays within ~0.2-0.5 s.
    """
    side = min(height, width)
    return 2 if side <= 480 else 1 if side <= 1080 else 0


def encode_jpeg(image_rgb: U8, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB image (OpenCV encodes BGR, so the channels are swapped first)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image_rgb.shape} as JPEG")
    return encoded.tobytes()


def _obscure(patch: U8, block: int) -> U8:
    """Pixelate to blocks of `block` pixels (area average), then blur the block edges away."""
    h, w = patch.shape[:2]
    small = cv2.resize(patch, (max(1, round(w / block)), max(1, round(h / block))),
                       interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    # Sigma of half a block smooths the steps between blocks; it adds no information back.
    return np.asarray(cv2.GaussianBlur(coarse, (0, 0), sigmaX=block / 2), dtype=np.uint8)
