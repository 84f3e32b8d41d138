"""The graph custodes runs CenterFace with: the shipped weights as constants, the same faces.

The ONNX file lists its weights among the graph's inputs; `centerface.graph()` takes them out
so that onnxruntime may fold, fuse and pre-pack them (2.2x faster, bench/detector_speed.py).
Nothing about the arithmetic may change: on real photos the boxes, scores and landmarks must
be those of the file as shipped.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx

from custodes.vision import centerface
from custodes.vision.centerface import CenterFace

F32 = npt.NDArray[np.float32]


def rgb(path: Path) -> npt.NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)


def in_place_order(boxes: F32, scores: F32, points: F32) -> tuple[F32, F32, F32]:
    """The faces ordered by place, not score: two near-equal scores may swap between the two
    graphs (they differ by ~1e-7)."""
    order = np.lexsort((boxes[:, 1].round(1), boxes[:, 0].round(1)))
    return boxes[order], scores[order], points[order]


def test_the_weights_are_constants_not_inputs() -> None:
    model = centerface.graph()
    assert [i.name for i in model.graph.input] == ["input.1"]
    assert len(model.graph.initializer) > 100  # the weights are all still there
    shipped = onnx.load(str(centerface.model_path()))
    assert len(shipped.graph.input) > 100  # what the fix is for: the file lists them as inputs
    kept = {w.name: w.raw_data for w in model.graph.initializer}
    assert kept == {w.name: w.raw_data for w in shipped.graph.initializer}


def test_the_node_finds_the_faces_the_shipped_file_finds(shared_data: Path) -> None:
    node, shipped = CenterFace(), CenterFace(model=centerface.graph(weights_as_inputs=True))
    crowd = rgb(shared_data / "crowds" / "linzaer_group_01.jpg")
    wider = sorted((shared_data / "faceboxes").glob("*.jpg"))[:3]
    for picture, scale in [(crowd, 1.0), (crowd, 0.5), *((rgb(p), 0.5) for p in wider)]:
        boxes, scores, points = in_place_order(*node.run(picture, scale=scale, floor=0.3))
        want_boxes, want_scores, want_points = in_place_order(
            *shipped.run(picture, scale=scale, floor=0.3))
        assert len(want_boxes) >= 1
        assert len(boxes) == len(want_boxes)
        # Batch-norm fusion reorders float sums: equal to well under a pixel, not bit for bit.
        assert np.abs(boxes - want_boxes).max() < 0.05
        assert np.abs(scores - want_scores).max() < 1e-3
        assert np.abs(points - want_points).max() < 0.05
