"""Face detection and recognition accuracy of custodes' pipeline, measured on real data.

    python bench/faces_accuracy.py [--data ../shared/data] [--quick]

Uses custodes' own FaceDetector (dlib HOG + 5-point landmarks), FaceEmbedder (onnx, one thread,
as the analysis worker builds it) and Tracker. Detection runs on the whole frame; the worker
scans only moving regions, which costs less and, per faces.py, finds the same faces in them.

1. LFW pair verification (faces/lfw_pairs.csv, 300 pairs): accuracy at custodes' match
   threshold, the best threshold on these pairs (tuned on the test set, so optimistic) and a
   10-fold estimate that tunes on nine folds and tests on the tenth.
2. Detection recall and precision on crowds/dlib_voc (human-annotated boxes, IoU >= 0.4,
   greedy one-to-one), at the default settings and over a sweep of settings.
3. Faces wrongly found in crowds/dlib_dogs.jpg (no human face in it).
4. Identification in video/face_recognition_short_hamilton_clip.mp4 against the reference
   photos of Lin-Manuel Miranda and Alex Lacamoire: per frame and per track.
5. Timings, as context for the settings.

--quick takes a subset of each (for a smoke run); its numbers are not the benchmark's.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import av
import cv2
import numpy as np
import numpy.typing as npt

from custodes.config import AnalyticsConfig, FacesConfig
from custodes.vision.embedding import MATCH_THRESHOLD, FaceEmbedder
from custodes.vision.faces import Box, Face, FaceDetector
from custodes.vision.tracker import FinishedTrack, Tracker

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
T = TypeVar("T")

SHARED_DATA: Final = Path(__file__).resolve().parents[2] / "shared" / "data"

DEFAULTS: Final = FacesConfig()  # "the default settings": min_size and upsample of the config
DEFAULT_THRESHOLD: Final = 0.0  # FaceDetector's own default score cut (dlib's)
DETECTION_IOU: Final = 0.4  # least IoU for a detection to count as finding an annotated face
MAX_FP_SHARE: Final = 0.05  # the sweep's pick: best recall with FP / detections at most this
FOLDS: Final = 10  # LFW's protocol uses ten folds


class Timings:
    """Wall-clock milliseconds per named step, reported as medians."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)

    def run(self, key: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        result = fn()
        self.ms[key].append(1000 * (time.perf_counter() - t0))
        return result


@dataclass
class Tools:
    detector: FaceDetector
    embedder: FaceEmbedder
    timings: Timings = field(default_factory=Timings)

    def detect(self, key: str, grey: U8, *, upsample: int = DEFAULTS.upsample,
               min_size: int = DEFAULTS.min_size,
               threshold: float = DEFAULT_THRESHOLD) -> list[Face]:
        return self.timings.run(key, lambda: self.detector.detect(
            grey, upsample=upsample, min_size=min_size, threshold=threshold))

    def embed(self, rgb: U8, faces: Sequence[Face]) -> F32:
        """Descriptors of the faces, one call per face, so the timing is per face."""
        vectors = [self.timings.run("embed one face",
                                    partial(self.embedder.embed, rgb, [face.dlib_shape()]))
                   for face in faces]
        return np.concatenate(vectors) if vectors else np.empty((0, 128), np.float32)


def read_image(path: Path) -> tuple[U8, U8]:
    """(RGB, grey) of an image file. cv2, not dlib: a few '.jpg' files are WebP or PNG."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return np.asarray(rgb, np.uint8), np.asarray(grey, np.uint8)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print()


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: with a few hundred trials and a handful of
    errors, the normal approximation's interval would run past 100 %."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return centre - half, centre + half


def pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f} %)" if whole else f"{part}/0"


# -- 1. LFW pair verification ---------------------------------------------------------------


@dataclass
class LfwFace:
    vector: F32
    fell_back: bool  # no face detected: landmarks were fitted in the central box


def central_face(faces: Sequence[Face], side: int) -> Face | None:
    """The face nearest the image centre: LFW centres the person the photo is labelled with,
    and some photos show other people at the edges."""
    if not faces:
        return None
    mid = side / 2
    return min(faces, key=lambda f: (f.box.center[0] - mid) ** 2 + (f.box.center[1] - mid) ** 2)


def median_box(boxes: Sequence[Box]) -> Box:
    x, y, w, h = (int(statistics.median(values)) for values in zip(*(
        (b.x, b.y, b.w, b.h) for b in boxes), strict=True))
    return Box(x, y, w, h)


def lfw_faces(root: Path, paths: Sequence[str], tools: Tools) -> dict[str, LfwFace]:
    """Descriptor of the central face of each LFW photo.

    Where the detector (upsample 1, as configured by default) finds nothing, the landmarks are
    fitted in a fallback box: the median of the boxes detected in the other photos. LFW photos
    are aligned, so that box holds the face; it is how a verification benchmark scores every
    pair, where custodes itself would have no face at all.
    """
    images = {p: read_image(root / p) for p in paths}
    found: dict[str, Face | None] = {}
    for p, (_, grey) in images.items():
        faces = tools.detect("detect LFW 250x250", grey, upsample=1)
        found[p] = central_face(faces, grey.shape[1])
    fallback = median_box([f.box for f in found.values() if f is not None])
    result: dict[str, LfwFace] = {}
    for p, (rgb, grey) in images.items():
        face = found[p]
        if face is None:
            face = Face(fallback, float("nan"), tools.detector.landmarks(grey, fallback))
        result[p] = LfwFace(tools.embed(rgb, [face])[0], fell_back=found[p] is None)
    return result


def accuracy(distances: F64, same: npt.NDArray[np.bool_], threshold: float) -> float:
    return float(np.mean((distances < threshold) == same))


def best_thresholds(distances: F64, same: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
    """(accuracy, lowest, highest threshold reaching it), over thresholds between distances."""
    d = np.unique(distances)
    candidates = np.concatenate([[d[0] - 1e-3], (d[:-1] + d[1:]) / 2, [d[-1] + 1e-3]])
    scores = np.array([accuracy(distances, same, t) for t in candidates])
    best = scores.max()
    winners = candidates[scores == best]
    return float(best), float(winners.min()), float(winners.max())


def k_fold(distances: F64, same: npt.NDArray[np.bool_]) -> tuple[list[float], list[float]]:
    """Accuracy of each fold at the threshold tuned on the other folds (the middle of the best
    range), and those thresholds. Folds interleave, so each holds both kinds of pair."""
    folds = np.arange(len(distances)) % FOLDS
    accuracies, thresholds = [], []
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        _, lo, hi = best_thresholds(distances[train], same[train])
        t = (lo + hi) / 2
        thresholds.append(t)
        accuracies.append(accuracy(distances[test], same[test], t))
    return accuracies, thresholds


def confusion(distances: F64, same: npt.NDArray[np.bool_], t: float) -> tuple[int, ...]:
    match = distances < t
    return (int(np.sum(match & same)), int(np.sum(match & ~same)),
            int(np.sum(~match & ~same)), int(np.sum(~match & same)))


def read_pairs(data: Path, quick: bool) -> list[tuple[str, str, bool]]:
    with (data / "faces" / "lfw_pairs.csv").open(newline="") as f:
        pairs = [(r["path1"], r["path2"], r["same"] == "1") for r in csv.DictReader(f)]
    return pairs[::5] if quick else pairs


def lfw_section(data: Path, tools: Tools, quick: bool) -> None:
    print("## 1. LFW pair verification (faces/lfw_pairs.csv)\n")
    pairs = read_pairs(data, quick)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    faces = lfw_faces(data / "faces", paths, tools)
    distances = np.array([np.linalg.norm(faces[a].vector - faces[b].vector)
                          for a, b, _ in pairs], dtype=np.float64)
    same = np.array([s for _, _, s in pairs], dtype=np.bool_)
    fell_back = [p for p in paths if faces[p].fell_back]
    pair_fb = sum(faces[a].fell_back or faces[b].fell_back for a, b, _ in pairs)
    print(f"{len(pairs)} pairs ({int(same.sum())} same, {int((~same).sum())} different), "
          f"{len(paths)} photos; no face found at upsample 1 in {len(fell_back)} photos "
          f"({pair_fb} pairs), scored with landmarks in the central fallback box: "
          f"{', '.join(Path(p).name for p in fell_back) or 'none'}\n")
    best, lo, hi = best_thresholds(distances, same)
    fold_acc, fold_t = k_fold(distances, same)
    rows: list[list[object]] = []
    for label, t in ((f"custodes ({MATCH_THRESHOLD})", MATCH_THRESHOLD),
                     ("best on these pairs (tuned on the test set)", (lo + hi) / 2)):
        tp, fp, tn, fn = confusion(distances, same, t)
        rows.append([label, f"{t:.3f}", f"{100 * accuracy(distances, same, t):.1f} %",
                     tp, fp, tn, fn])
    rows.append([f"{FOLDS}-fold (tune on 9, test on 1)",
                 f"{min(fold_t):.3f}-{max(fold_t):.3f}",
                 f"{100 * statistics.mean(fold_acc):.1f} % +- "
                 f"{100 * statistics.pstdev(fold_acc):.1f}", "", "", "", ""])
    table(["threshold", "value", "accuracy", "TP", "FP", "TN", "FN"], rows)
    right = int(np.sum((distances < MATCH_THRESHOLD) == same))
    low, high = wilson(right, len(pairs))
    print(f"at {MATCH_THRESHOLD}: {right}/{len(pairs)} right, 95 % interval "
          f"{100 * low:.1f}-{100 * high:.1f} % (all that so few pairs can tell)")
    print(f"best accuracy {100 * best:.1f} % for any threshold in [{lo:.3f}, {hi:.3f}]")
    detected = np.array([not (faces[a].fell_back or faces[b].fell_back) for a, b, _ in pairs])
    print(f"at {MATCH_THRESHOLD}, over the {int(detected.sum())} pairs whose faces were both "
          f"detected: {100 * accuracy(distances[detected], same[detected], MATCH_THRESHOLD):.1f} %")
    print(f"distances: same person median {np.median(distances[same]):.3f}, max "
          f"{distances[same].max():.3f}; different people median "
          f"{np.median(distances[~same]):.3f}, min {distances[~same].min():.3f}\n")
    errors = [(a, b, s, d) for (a, b, s), d in zip(pairs, distances, strict=True)
              if (d < MATCH_THRESHOLD) != s]
    print(f"errors at {MATCH_THRESHOLD}:")
    for a, b, s, d in sorted(errors, key=lambda e: e[3]):
        kind = "FN (same, not matched)" if s else "FP (different, matched)"
        marks = "".join(" [fallback]" for p in (a, b) if faces[p].fell_back)
        print(f"  {d:.3f} {kind}: {Path(a).name} / {Path(b).name}{marks}")
    print()


# -- 2 and 3. Detection ---------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    upsample: int
    threshold: float
    min_size: int

    def __str__(self) -> str:
        return (f"upsample {self.upsample}, min_size {self.min_size}, "
                f"threshold {self.threshold:+.1f}")

    @property
    def is_default(self) -> bool:
        return (self.upsample, self.threshold, self.min_size) == (
            DEFAULTS.upsample, DEFAULT_THRESHOLD, DEFAULTS.min_size)


# Also run on the clip: upsample 2 finds the ~25-35 px faces that upsample 1 cannot, so this
# shows what such small faces do to naming, apart from what they do to detection.
FINER: Final = Setting(2, DEFAULT_THRESHOLD, 20)


@dataclass
class DetectionResult:
    setting: Setting
    detections: int = 0
    true_positives: int = 0
    found_large: int = 0  # annotated faces >= the setting's min_size that were found
    smallest: int = 0  # smallest side of a detection on the annotated photos (0: none)
    dog_faces: list[Face] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    @property
    def false_positives(self) -> int:
        return self.detections - self.true_positives

    @property
    def fp_share(self) -> float:
        return self.false_positives / self.detections if self.detections else 0.0


def sweep_settings(quick: bool) -> list[Setting]:
    """Upsample 0/1/2 at several score cuts, at the default min_size; upsample 2 with min_size
    20 (its smallest boxes are ~22 px); and upsample 1 with min_size 36 and 20, because dlib's
    smallest boxes at upsample 1 are 37 px, just under the default min_size of 40."""
    thresholds = (0.0,) if quick else (-0.5, -0.3, 0.0, 0.3, 0.5)
    upsamples = (0, 1) if quick else (0, 1, 2)
    settings = [Setting(up, t, DEFAULTS.min_size) for up in upsamples for t in thresholds]
    if not quick:
        settings += [Setting(1, 0.0, 36), Setting(1, 0.0, 20),
                     *(Setting(2, t, 20) for t in thresholds)]
    return settings


def read_annotations(folder: Path) -> dict[str, list[Box]]:
    boxes: dict[str, list[Box]] = defaultdict(list)
    with (folder / "boxes.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            boxes[r["image"]].append(Box(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])))
    return dict(boxes)


def greedy_match(truth: Sequence[Box], found: Sequence[Box]) -> list[tuple[int, int]]:
    """One-to-one (truth index, found index) pairs with IoU >= DETECTION_IOU, best IoU first."""
    pairs = sorted(((t.iou(f), ti, fi) for ti, t in enumerate(truth)
                    for fi, f in enumerate(found) if t.iou(f) >= DETECTION_IOU), reverse=True)
    used_t: set[int] = set()
    used_f: set[int] = set()
    matches = []
    for _, ti, fi in pairs:
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
            matches.append((ti, fi))
    return matches


def run_setting(s: Setting, images: dict[str, tuple[U8, list[Box]]], dogs: U8,
                tools: Tools) -> DetectionResult:
    result = DetectionResult(s)
    sides: list[int] = []
    for grey, truth in images.values():
        t0 = time.perf_counter()
        found = tools.detector.detect(grey, upsample=s.upsample, min_size=s.min_size,
                                      threshold=s.threshold)
        result.ms.append(1000 * (time.perf_counter() - t0))
        matches = greedy_match(truth, [f.box for f in found])
        result.detections += len(found)
        sides += [min(f.box.w, f.box.h) for f in found]
        result.true_positives += len(matches)
        result.found_large += sum(min(truth[ti].w, truth[ti].h) >= s.min_size
                                  for ti, _ in matches)
    result.smallest = min(sides, default=0)
    result.dog_faces = tools.detector.detect(dogs, upsample=s.upsample, min_size=s.min_size,
                                             threshold=s.threshold)
    return result


def pick(results: Sequence[DetectionResult]) -> DetectionResult | None:
    """Best recall with FP share <= MAX_FP_SHARE. Ties go to fewer false positives (here, then
    on the dogs), then to the cheaper upsample, then to the score cut and min_size nearest the
    defaults: the least change that reaches the same recall."""
    ok = [r for r in results if r.fp_share <= MAX_FP_SHARE]
    return max(ok, key=lambda r: (r.true_positives, -r.false_positives, -len(r.dog_faces),
                                  -r.setting.upsample,
                                  -abs(r.setting.threshold - DEFAULT_THRESHOLD),
                                  -abs(r.setting.min_size - DEFAULTS.min_size)),
               default=None)


def detection_section(data: Path, tools: Tools, quick: bool) -> Setting | None:
    """Prints sections 2 and 3; returns the sweep's pick."""
    folder = data / "crowds" / "dlib_voc"
    annotations = read_annotations(folder)
    images = {name: (read_image(folder / name)[1], boxes) for name, boxes in annotations.items()}
    dogs = read_image(data / "crowds" / "dlib_dogs.jpg")[1]
    all_truth = [b for _, boxes in images.values() for b in boxes]
    results = [run_setting(s, images, dogs, tools) for s in sweep_settings(quick)]
    default = next(r for r in results if r.setting.is_default)
    chosen = pick(results)

    print("## 2. Detection on crowds/dlib_voc (human-annotated boxes)\n")
    sizes = sorted(min(b.w, b.h) for b in all_truth)
    small = sum(size < DEFAULTS.min_size for size in sizes)
    print(f"{len(all_truth)} annotated faces in {len(images)} photos, sides {sizes[0]}-"
          f"{sizes[-1]} px; {small} are smaller than the default min_size {DEFAULTS.min_size}. "
          f"Match: IoU >= {DETECTION_IOU}, greedy one-to-one. The annotations have the sizes of "
          "dlib's own boxes (37, 44, 53 px... at upsample 1): made with or for this detector, "
          "they flatter it.\n")
    print(f"Default settings (upsample {DEFAULTS.upsample}, min_size {DEFAULTS.min_size}, "
          f"threshold {DEFAULT_THRESHOLD}):")
    large = len(all_truth) - small
    print(f"  recall over all boxes      {pct(default.true_positives, len(all_truth))}")
    print(f"  recall over boxes >= {DEFAULTS.min_size} px {pct(default.found_large, large)}")
    print(f"  precision                  {pct(default.true_positives, default.detections)}; "
          f"false positives {default.false_positives}\n")
    sweep_table(results, chosen, all_truth)
    dogs_section(default, results)
    return chosen.setting if chosen else None


def sweep_table(results: Sequence[DetectionResult], chosen: DetectionResult | None,
                truth: Sequence[Box]) -> None:
    rows = []
    for r in results:
        s = r.setting
        eligible = sum(min(b.w, b.h) >= s.min_size for b in truth)
        mark = " ".join(m for m, on in (("default", s.is_default), ("<- best", r is chosen))
                        if on)
        rows.append([s.upsample, f"{s.threshold:+.1f}", s.min_size, r.detections,
                     r.true_positives, r.false_positives, f"{100 * r.fp_share:.0f} %",
                     pct(r.true_positives, len(truth)), pct(r.found_large, eligible),
                     r.smallest or "-", len(r.dog_faces), f"{statistics.median(r.ms):.0f}",
                     mark])
    print(f"Sweep ('<- best': best recall with false positives <= {100 * MAX_FP_SHARE:.0f} % "
          "of detections on these photos):\n")
    table(["upsample", "threshold", "min_size", "detections", "TP", "FP", "FP share",
           "recall (all)", "recall (>= min_size)", "smallest box", "dogs.jpg faces",
           "ms/photo", ""], rows)


def dogs_section(default: DetectionResult, results: Sequence[DetectionResult]) -> None:
    print("## 3. Faces wrongly found in crowds/dlib_dogs.jpg (four dogs, no person)\n")
    boxes = ", ".join(f"{f.box} score {f.score:.2f}" for f in default.dog_faces) or "none"
    print(f"default settings: {len(default.dog_faces)} ({boxes})")
    worst = max(results, key=lambda r: len(r.dog_faces))
    print(f"most over the sweep: {len(worst.dog_faces)} at upsample {worst.setting.upsample}, "
          f"threshold {worst.setting.threshold:+.1f}, min_size {worst.setting.min_size} "
          "(the sweep table's 'dogs.jpg faces' column has each setting)\n")


# -- 4. Identification in the Hamilton clip --------------------------------------------------

MIRANDA: Final = "Lin-Manuel_Miranda"
GALLERY: Final = (MIRANDA, "Alex_Lacamoire")
CLIP: Final = "video/face_recognition_short_hamilton_clip.mp4"
# Mean absolute grey difference between consecutive frames above which a frame starts a shot.
# Within a shot it stays below ~20 in this clip; the three cuts give ~29-31.
CUT_DIFFERENCE: Final = 20.0


@dataclass(frozen=True)
class Shot:
    """Frames [first, stop) of one camera shot, and where Miranda's face is in it.

    A detection is Miranda's when its box centre lies in `miranda` and it is at least
    `min_width` wide; every other detection is someone else (no one else in the clip is
    Miranda). `miranda` None: he is not in the shot.
    """

    first: int
    stop: int
    what: str
    miranda: Box | None
    min_width: int = 0


# Ground truth, decided by looking at every tenth frame and at crops of every box found at
# upsample 1 (the default) and at upsample 2 with min_size 20 and threshold -0.3 (the most
# permissive setting run on the clip), and checked against the cuts found by CUT_DIFFERENCE,
# which each run verifies:
# - 0-19: wide shot of the stage. Miranda stands right of centre singing into a microphone (his
#   boxes 44-55 px, centres x ~540-570). The pianist sits at the far left (boxes 27-33 px at
#   x ~52-56, y ~188): a real face, but too small to tell who it is, so a name on it is never
#   verified and counts as wrong, Alex_Lacamoire included.
# - 20-81: close-up of Miranda in profile filling the right part of the frame (face > 150 px);
#   the audience behind is blurred and small.
# - 82-210: medium shot of Miranda, the only person in the frame (his boxes 75-113 px). Upsample
#   2 also finds 27-33 px "faces" below his chin (y ~165-175): his hand; hence min_width.
# - 211-274: reaction shot of the audience: a blurred laughing man at the top left (boxes 53-78
#   px) and, at upsample 2, a ~22 px blurred object at x ~444-456, y ~166-173, not a face.
#   Neither Miranda nor the pianist is in it.
# So any name other than Miranda's, and Miranda's name on a box that is not his, is wrong;
# "unknown" is never wrong.
SHOTS: Final = (
    Shot(0, 20, "wide stage shot", Box(440, 0, 200, 200), min_width=30),
    Shot(20, 82, "close-up, profile", Box(320, 0, 320, 360), min_width=100),
    Shot(82, 211, "medium shot, Miranda alone", Box(0, 0, 640, 360), min_width=60),
    Shot(211, 275, "audience reaction", None),
)


def shot_of(frame: int) -> Shot:
    return next(s for s in SHOTS if s.first <= frame < s.stop)


def is_miranda(frame: int, box: Box) -> bool:
    shot = shot_of(frame)
    if shot.miranda is None or box.w < shot.min_width:
        return False
    cx, cy = box.center
    region = shot.miranda
    return region.x <= cx < region.right and region.y <= cy < region.bottom


@dataclass
class Named:
    name: str | None  # None: unknown
    distances: dict[str, float]  # to the nearest photo of each person


def name_face(vector: F32, gallery: dict[str, F32]) -> Named:
    """The person with the nearest photo, if nearer than MATCH_THRESHOLD; else unknown."""
    distances = {person: float(np.linalg.norm(photos - vector, axis=1).min())
                 for person, photos in gallery.items()}
    nearest = min(distances, key=lambda p: distances[p])
    return Named(nearest if distances[nearest] < MATCH_THRESHOLD else None, distances)


def build_gallery(data: Path, tools: Tools) -> dict[str, F32]:
    """Every reference photo's largest face (upsample 1: photos are big, faces are too)."""
    gallery: dict[str, F32] = {}
    rows = []
    for person in GALLERY:
        photos = sorted((data / "faces" / "face_recognition" / person).iterdir())
        vectors = []
        for photo in photos:
            rgb, grey = read_image(photo)
            faces = tools.detector.detect(grey, upsample=1)
            if faces:
                largest = max(faces, key=lambda f: f.box.area)
                vectors.append(tools.embedder.embed(rgb, [largest.dlib_shape()])[0])
        gallery[person] = np.stack(vectors)
        rows.append([person, len(photos), len(vectors)])
    table(["reference person", "photos", "faces embedded"], rows)
    return gallery


@dataclass
class Decoded:
    index: int
    time: float
    rgb: U8
    grey: U8
    difference: float  # mean absolute grey difference from the previous frame


def decode(path: Path) -> Iterator[Decoded]:
    """Every frame, with grey = the decoder's luma plane, as custodes' decode.py hands it over
    (not a colour conversion of RGB)."""
    previous: F64 | None = None
    with av.open(str(path)) as container:
        for index, video in enumerate(container.decode(video=0)):
            yuv = video.reformat(format="yuv420p")
            plane = yuv.planes[0]
            rows = np.frombuffer(memoryview(plane), np.uint8).reshape(yuv.height,
                                                                       plane.line_size)
            grey = np.ascontiguousarray(rows[:, :yuv.width])
            rgb = np.asarray(video.to_ndarray(format="rgb24"), np.uint8)
            current = grey.astype(np.float64)
            diff = float(np.abs(current - previous).mean()) if previous is not None else 0.0
            previous = current
            yield Decoded(index, float(video.time), rgb, grey, diff)


@dataclass
class FrameCounts:
    frames: int = 0
    analysed: int = 0
    with_face: int = 0
    miranda_visible: int = 0  # analysed frames of shots he is in
    miranda_detected: int = 0
    miranda_named: int = 0
    wrong: int = 0
    faces: int = 0
    miranda_faces: int = 0
    miranda_faces_named: int = 0
    other_faces: int = 0
    other_faces_unknown: int = 0
    miranda_distances: list[float] = field(default_factory=list)
    other_nearest: list[float] = field(default_factory=list)  # others: nearest photo, anyone
    wrong_examples: list[str] = field(default_factory=list)
    per_shot: dict[int, list[int]] = field(default_factory=dict)  # [frames, detected, named]


@dataclass
class TrackRun:
    """A Tracker fed every analysed frame, or only those a 5 fps analysis would take."""

    label: str
    interval: float
    tracker: Tracker = field(default_factory=lambda: Tracker(max_age=1.0))
    next_sample: float = float("-inf")
    finished: list[FinishedTrack] = field(default_factory=list)

    def feed(self, frame: Decoded, faces: Sequence[Face]) -> None:
        # The same sampling rule as decode.py: the first frame at or after each interval.
        if frame.time < self.next_sample:
            return
        self.next_sample = frame.time + self.interval - 0.001
        self.finished += self.tracker.update(frame.time, faces, frame.grey, lambda: frame.rgb)


def count_frame(counts: FrameCounts, frame: Decoded, faces: Sequence[Face],
                names: Sequence[Named]) -> None:
    shot = shot_of(frame.index)
    counts.analysed += 1
    counts.with_face += bool(faces)
    truth = [is_miranda(frame.index, f.box) for f in faces]
    named_right = any(t and n.name == MIRANDA for t, n in zip(truth, names, strict=True))
    wrong = [(f, n) for f, t, n in zip(faces, truth, names, strict=True)
             if n.name is not None and not (t and n.name == MIRANDA)]
    stats = counts.per_shot.setdefault(shot.first, [0, 0, 0])
    stats[0] += 1
    stats[1] += any(truth)
    stats[2] += named_right
    counts.miranda_visible += shot.miranda is not None
    counts.miranda_detected += any(truth)
    counts.miranda_named += named_right
    counts.wrong += bool(wrong)
    counts.wrong_examples += [f"frame {frame.index} {f.box}: named {n.name}" for f, n in wrong]
    for t, n in zip(truth, names, strict=True):
        counts.faces += 1
        if t:
            counts.miranda_faces += 1
            counts.miranda_faces_named += n.name == MIRANDA
            counts.miranda_distances.append(n.distances[MIRANDA])
        else:
            counts.other_faces += 1
            counts.other_faces_unknown += n.name is None
            counts.other_nearest.append(min(n.distances.values()))


def hamilton_section(data: Path, tools: Tools, quick: bool,
                     settings: Sequence[tuple[str, Setting]]) -> None:
    print(f"## 4. Identification in {CLIP}\n")
    gallery = build_gallery(data, tools)
    for label, setting in settings:
        print(f"### {label}: {setting}\n")
        analyse_clip(data, tools, gallery, setting, step=5 if quick else 1)


def analyse_clip(data: Path, tools: Tools, gallery: dict[str, F32], setting: Setting,
                 step: int) -> None:
    counts = FrameCounts()
    runs = [TrackRun("every frame", 0.0),
            TrackRun(f"{AnalyticsConfig().fps:g} fps (custodes' default analysis rate)",
                     1 / AnalyticsConfig().fps)]
    cuts = []
    index: dict[float, int] = {}
    for frame in decode(data / CLIP):
        counts.frames += 1
        index[frame.time] = frame.index
        if frame.difference > CUT_DIFFERENCE:
            cuts.append(frame.index)
        if frame.index % step:
            continue
        faces = tools.detect(f"detect 640x360 frame, {setting}", frame.grey,
                             upsample=setting.upsample, min_size=setting.min_size,
                             threshold=setting.threshold)
        vectors = tools.embed(frame.rgb, faces)
        count_frame(counts, frame, faces, [name_face(v, gallery) for v in vectors])
        for run in runs:
            run.feed(frame, faces)
    check_cuts(cuts, counts.frames)
    frame_report(counts, step)
    for run in runs:
        run.finished += run.tracker.flush()
        track_report(run, gallery, tools, index)


def check_cuts(cuts: Sequence[int], frames: int) -> None:
    """The ground truth is per shot: refuse to score a clip whose shots are not those."""
    expected = [s.first for s in SHOTS[1:]]
    if cuts != expected or frames != SHOTS[-1].stop:
        raise SystemExit(f"shot cuts at {cuts} in {frames} frames, ground truth expects "
                         f"{expected} in {SHOTS[-1].stop}: not the clip the truth was made for")


def frame_report(c: FrameCounts, step: int) -> None:
    print(f"{c.frames} frames decoded, {c.analysed} analysed (every {step}), match threshold "
          f"{MATCH_THRESHOLD}; shot cuts verified at {[s.first for s in SHOTS[1:]]}\n")
    table(["per frame", "count"], [
        ["frames analysed", c.analysed],
        ["frames with a face detected", pct(c.with_face, c.analysed)],
        ["frames of shots showing Miranda", c.miranda_visible],
        ["... his face detected", pct(c.miranda_detected, c.miranda_visible)],
        ["... correctly named Lin-Manuel_Miranda", pct(c.miranda_named, c.miranda_visible)],
        ["frames where anyone is wrongly named", c.wrong],
    ])
    rows = []
    for s in SHOTS:
        frames, detected, named = c.per_shot.get(s.first, [0, 0, 0])
        rows.append([f"{s.first}-{s.stop - 1} {s.what}", frames,
                     *((detected, named) if s.miranda else ("-", "-"))])
    table(["shot (frames)", "frames analysed", "Miranda detected", "Miranda named"], rows)
    table(["per face (detection)", "count"], [
        ["faces detected", c.faces],
        ["Miranda's faces named Miranda", pct(c.miranda_faces_named, c.miranda_faces)],
        ["other people's faces left unknown", pct(c.other_faces_unknown, c.other_faces)],
    ])
    if c.miranda_distances:
        print(f"distance of Miranda's faces to his photo: median "
              f"{statistics.median(c.miranda_distances):.3f}, max "
              f"{max(c.miranda_distances):.3f} (threshold {MATCH_THRESHOLD})")
    if c.other_nearest:
        print(f"other people's faces, distance to the nearest reference photo: min "
              f"{min(c.other_nearest):.3f}")
    for example in c.wrong_examples[:10]:
        print(f"  wrong: {example}")
    print()


def track_report(run: TrackRun, gallery: dict[str, F32], tools: Tools,
                 index: dict[float, int]) -> None:
    """custodes names a track by the descriptor of its best face: score exactly that.

    `index` maps frame times to frame numbers (the clip's first frame is at 0.85 s)."""
    rows = []
    right = wrong = unknown = miranda_tracks = 0
    for track in sorted(run.finished, key=lambda tr: tr.first_seen):
        best = track.best
        named = name_face(tools.embedder.embed(best.image, [best.face.dlib_shape()])[0],
                          gallery)
        truths = {is_miranda(index[t], box) for t, box in (
            (track.first_seen, track.first_box), (best.time, best.box),
            (track.last_seen, track.last_box))}
        truth = is_miranda(index[best.time], best.box)
        miranda_tracks += truth
        if named.name is None:
            verdict = "unknown"
            unknown += 1
        elif truth and named.name == MIRANDA:
            verdict = "right"
            right += 1
        else:
            verdict = "WRONG"
            wrong += 1
        rows.append([track.id, f"{index[track.first_seen]}-"
                     f"{index[track.last_seen]}", track.detections,
                     index[best.time], "Miranda" if truth else "someone else",
                     "yes" if len(truths) > 1 else "no",
                     " ".join(f"{p[:4]} {d:.3f}" for p, d in named.distances.items()),
                     named.name or "unknown", verdict])
    print(f"Tracks, tracker fed {run.label}:\n")
    table(["track", "frames", "detections", "best face at frame", "truth (best face)",
           "mixed", "distances", "named", "verdict"], rows)
    print(f"tracks: {len(rows)}; Miranda's: {miranda_tracks}; named right {right}, "
          f"wrongly named {wrong}, unknown {unknown}\n")


# -- 5. Timings -----------------------------------------------------------------------------


def timing_section(tools: Tools) -> None:
    print("## 5. Timings (median, this machine; context only)\n")
    table(["step", "calls", "median ms"], [
        [key, len(ms), f"{statistics.median(ms):.1f}"] for key, ms in tools.timings.ms.items()])
    print("detection includes the 5-point landmarks of each face; embedding includes dlib's "
          "chip alignment; ms/photo per setting is in the sweep table (photos ~500x375).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA,
                        help="the shared data folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a subset of everything, for a smoke run")
    args = parser.parse_args()
    started = time.perf_counter()
    # One onnxruntime thread, as the analysis worker builds its embedder.
    tools = Tools(FaceDetector(upsample=DEFAULTS.upsample, min_size=DEFAULTS.min_size),
                  FaceEmbedder("onnx", threads=1))
    print(f"# custodes face accuracy{' (--quick: a subset, not the benchmark)' * args.quick}"
          f"\n\nmatch threshold {MATCH_THRESHOLD} (custodes.vision.embedding); "
          f"defaults from FacesConfig: upsample {DEFAULTS.upsample}, min_size "
          f"{DEFAULTS.min_size}, detector threshold {DEFAULT_THRESHOLD}\n")
    lfw_section(args.data, tools, args.quick)
    chosen = detection_section(args.data, tools, args.quick)
    settings = [("default settings",
                 Setting(DEFAULTS.upsample, DEFAULT_THRESHOLD, DEFAULTS.min_size))]
    if chosen is not None and not chosen.is_default:
        # Does what wins on still photos hold up in video?
        settings.append(("the sweep's pick", chosen))
    if not args.quick:
        settings.append(("finer, for the faces of ~20-35 px it adds", FINER))
    hamilton_section(args.data, tools, args.quick, settings)
    timing_section(tools)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
