"""Irreversible blurring of faces and privacy zones in pictures that leave the recorder.

A plain Gaussian blur can be partly undone (deconvolution), and a light one leaves a face
recognisable. Here each region is first pixelated, averaged down to a coarse grid of about
PIXELS_ACROSS_FACE blocks across the face (blocks of at least MIN_BLOCK pixels), which discards
the detail for good; the grid is then enlarged smoothly (interpolated and blurred between the
block averages: nothing is added back), so the result does not look like a mosaic that invites
guessing.

All functions return a new image and leave their input unchanged (`blur_regions` with
copy=False: its input, blurred).

Costs on the 2-core box: `blur_regions` ~0.15 ms a face of 100-300 px (0.2-0.5 ms when the
blocks were drawn at full size and blurred there: ~10 ms a 720p frame of the Hamilton clip);
`redact_snapshot` is dominated by its face detection (`custodes.redaction.detect`: CenterFace
on the whole picture, ~0.1 s for 640x360, ~0.35 s for 720p and above, which it sees at 720
lines); `encode_jpeg` ~0.4 ms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from custodes.redaction.detect import blur_boxes, snapshot_scale
from custodes.vision.faces import Box, FaceDetector

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Polygon = Sequence[tuple[float, float]]

PIXELS_ACROSS_FACE: Final = 6  # blocks across a face: identity is gone, a face is still seen
ZONE_BLOCKS_ACROSS: Final = 32  # blocks across the image in a privacy zone
# Pixels a block is at least: at 6 blocks across, a face under 24 px would keep blocks of 2-3
# px, hardly coarser than the face (a 13 px face in a live tile stayed a face to the eye).
MIN_BLOCK: Final = 4
SMOOTH_STEP: Final = 4  # the block grid is smoothed at this many pixels a block (_obscure)
FACE_MARGIN: Final = 0.25  # a face box grows by this on each side before its blur
# The smoothing of _obscure: a Gaussian of sigma SMOOTH_STEP / 2, 13 taps (OpenCV's own size
# for that sigma), made once. cv2.GaussianBlur builds its kernel and dispatches on every call:
# ~35 us a face's small grid against ~6 us for sepFilter2D with this kernel, and a 720p frame
# of a crowd has ~20 such grids (ten faces; Y and the interleaved UV of `redaction.video`).
_SMOOTH: Final = cv2.getGaussianKernel(13, SMOOTH_STEP / 2).astype(np.float32)


def blur_regions(image: U8, boxes: Iterable[Box], *, margin: float = FACE_MARGIN,
                 ellipse: bool = True, copy: bool = True) -> U8:
    """A copy of an image (RGB, grey, or interleaved chroma: any channels) with each box
    pixelated, then smoothed; with copy=False, the image itself (a caller that owns a frame
    and will not use it unblurred: a 720p plane's copy is ~25 us a frame for nothing).

    Each box grows by `margin` of its size on every side first (detector boxes cut through
    hair, ears and chin). With `ellipse` only the ellipse inscribed in the grown box changes,
    which looks like a face and still covers the box's corners at margin >= 0.25 (a corner
    lies at (0.5 / 0.75) ** 2 * 2 = 0.89 of the ellipse's radius); otherwise the whole
    rectangle does.
    """
    out = image.copy() if copy else image
    height, width = image.shape[:2]
    for box in boxes:
        grown = box.expand(margin)
        region = grown.clip(width, height)
        if region.area == 0:
            continue
        block = max(MIN_BLOCK, math.ceil(max(box.w, box.h) / PIXELS_ACROSS_FACE))
        patch = out[region.y:region.bottom, region.x:region.right]
        obscured = _obscure(patch, block)
        if ellipse:
            # The whole box's ellipse, also where the picture's edge cuts the box: an ellipse
            # of the cut part would leave the face's corners at the edge.
            mask = np.zeros(patch.shape[:2], dtype=np.uint8)
            cx, cy = grown.center
            cv2.ellipse(mask, (round(cx) - region.x, round(cy) - region.y),
                        (grown.w // 2, grown.h // 2), 0, 0, 360, 255, thickness=-1)
            # copyTo with a mask: several times faster than numpy's boolean indexing.
            cv2.copyTo(obscured, mask, patch)
        else:
            patch[...] = obscured
    return out


def blur_polygons(image: U8, polygons: Iterable[Polygon]) -> U8:
    """A copy of the image with privacy zones obscured; points are (x, y) in 0..1 of the image.

    Zones are pixelated to ZONE_BLOCKS_ACROSS blocks across the whole image, then smoothed:
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


def redact_snapshot(image_rgb: U8, detector: FaceDetector, known: Iterable[Box] = (), *,
                    zones: Sequence[Polygon] = ()) -> U8:
    """A copy of an RGB snapshot with every face the detector finds blurred, plus `known`,
    and the privacy `zones` (see `blur_polygons`).

    `detector` is redaction's (`RedactionSettings.detector`: REDACT_THRESHOLD, faces of any
    size); it sees the picture at up to SNAPSHOT_LINES lines, and an unsure face is blurred
    wider (`custodes.redaction.detect.blur_boxes`). `known` adds boxes the caller already has
    (the tracker's predicted boxes), which covers a face the detector misses in this picture.
    """
    faces = detector.find(image_rgb, scale=snapshot_scale(*image_rgb.shape[:2]))
    boxes = [*blur_boxes(faces), *known]
    log.debug("redacting %d faces (%d detected)", len(boxes), len(faces))
    redacted = blur_regions(image_rgb, boxes)
    return blur_polygons(redacted, zones) if zones else redacted


def encode_jpeg(image_rgb: U8, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB image (OpenCV encodes BGR, so the channels are swapped first)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image_rgb.shape} as JPEG")
    return encoded.tobytes()


def _obscure(patch: U8, block: int) -> U8:
    """Average down to blocks of `block` pixels, then enlarge smoothly back.

    What is kept is the coarse grid of block averages and nothing else: the enlargement only
    interpolates between them and smooths, so it adds no information, and it draws no block
    edges. Pixels to blocks at an integer factor (fx = 1 / block): OpenCV's fast area average,
    ~5x cheaper than reducing to a rounded size; a patch smaller than a block becomes its
    average. The grid is enlarged SMOOTH_STEP times and blurred there, then to the patch's
    size: a bilinear enlargement alone leaves creases at the block centres (edges, to an edge
    detector: 4x the Laplacian of a blurred face), and a blur at full size would cost in
    proportion to the patch (seconds for a fail-closed box grown to the whole picture)."""
    h, w = patch.shape[:2]
    if w < block or h < block:
        small = cv2.resize(patch, (1, 1), interpolation=cv2.INTER_AREA)
    else:
        small = cv2.resize(patch, None, fx=1 / block, fy=1 / block,
                           interpolation=cv2.INTER_AREA)
    step = cv2.resize(small, (small.shape[1] * SMOOTH_STEP, small.shape[0] * SMOOTH_STEP),
                      interpolation=cv2.INTER_LINEAR)
    # Sigma of half a block (at this size): smooths the steps between blocks, adds nothing.
    step = cv2.sepFilter2D(step, -1, _SMOOTH, _SMOOTH)
    return np.asarray(cv2.resize(step, (w, h), interpolation=cv2.INTER_LINEAR),
                      dtype=np.uint8)
