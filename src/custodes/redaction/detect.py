"""How redaction looks for faces: one CNN detector (`custodes.vision.faces.FaceDetector`, the
one analytics uses) at REDACT_THRESHOLD, for every picture that leaves the node, and the
settings that say how finely and how often it looks.

    settings = NODE_SETTINGS                       # what the node uses
    detector = settings.detector()
    boxes = blur_boxes(detector.find(rgb, scale=settings.scale(360, 640)))

Fail closed: a face the detector is unsure of (score below DETECT_THRESHOLD, the cut for
analytics) is blurred over a larger box than a sure one, because an unsure box is the one most
likely to be misplaced or too small. The settings' digest names a box cache or a redacted copy:
any change of the settings gives new names, so nothing made under old settings is served.

The detector's cost grows with the pixels it is fed (~23 CPU ms for a 720p frame at 240
lines, ~78 at 480, on one thread of the 2-core box: bench/detector_speed.py), so it sees every
picture shrunk to at most `detect_lines` lines: the cost per picture is bounded whatever the
camera. Faces from ~10 px of the shrunk picture are found,
i.e. ~30 px of a 720p picture at 240 lines. 240 rather than 270 lines: a quarter less search
(16.6 against 22.6 ms per frame of a 720p 15 fps stream, searching every 3rd frame) for 305
detections on the shared 720p stream against 309.

Small faces: at 240 lines a 720p picture's faces under ~40 px are mostly missed. The fine
search (`fine_lines`, `fine_every`; `custodes.redaction.video`) looks at one searched frame
every `fine_every` seconds at `fine_lines` lines instead, follows the small faces it finds
between (crops around them, at up to SNAPSHOT_LINES, in one run of the network) and holds them
until the next fine search (half as long before their first sighting: a viewer's first frame
waits for every face that can be held back to it, ~0.5 CPU-s of search at 720p instead of
~0.2). Measured with `bench/redaction.py` (2026-12-02, the 2-core box at load 6-8): on 24
WIDER FACE photos made into 2 s of panning 720p video, 480 lines every 2 s hides 95.3 % of the
face-frames of 10-20 px, 96.8 % of 20-40 px and 97.6 % of larger ones, against 35.9 / 76.1 /
94.6 % without, blurring 29 % of the picture instead of 17 % (crowds: held boxes fail closed
over neighbours); a first copy of the shared 720p 15 fps stream costs 36-38 ms a frame (1.8x
real time) against 28-30 ms (2.2-2.4x) in the same runs; ~31 against ~27 at load 10 in an
earlier run. Every 1 s (measured with an earlier version): ~25 % more search for no more
hidden. Pictures of up to NATIVE_LINES lines (sub streams) get no fine search: they are
searched at their own size already.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Final

from custodes.vision.faces import DETECT_THRESHOLD, REDACT_THRESHOLD, Box, Face, FaceDetector, Found

# An unsure face's box grows by this much of its size on each side, before the blur's margin.
UNSURE_GROWTH: Final = 0.2
# Lines the detector sees of a snapshot or live picture: one picture, not a stream, so it can
# afford the finest look (faces from ~10 px of a 720p picture, ~0.4 s at 720p).
SNAPSHOT_LINES: Final = 720
# A sub-stream-sized picture is never shrunk for the search: on the shared 480x270 store-aisle
# clip 240 lines find 3 faces in 7 frames, its own 270 lines 10 (MOT20's night crowd at 826x540:
# 2 at 240 lines, 6 at 540; it needs 2x enlargement, 21, at 4x the cost: not done).
NATIVE_LINES: Final = 360
# Bumped when what the same settings produce changes (a fix in linking or planning), so that
# box caches and copies made by older code are not reused.
_ALGORITHM: Final = 1


@dataclass(frozen=True)
class RedactionSettings:
    """How a video is searched for faces and how boxes are carried between searches.

    Defaults chosen with `bench/redaction.py` (see `custodes.redaction.video`).
    """

    threshold: float = REDACT_THRESHOLD
    detect_lines: int = 240  # the detector sees each searched frame shrunk to this many lines
    detect_fps: float = 5.0  # searched frames per second of video (every 3rd frame at 15 fps)
    hold: float = 0.5  # seconds a face stays blurred before its first / after its last sighting
    # Between searches a face's box grows by this many face sizes per second away from the
    # nearest search, on each side: a face that moves ~1.5 face widths a second (a walker
    # crossing the picture) stays covered in the frames the detector did not see.
    spread: float = 1.5
    # The fine search (`custodes.redaction.video`): every `fine_every` seconds (and at the
    # first and last frame) a searched frame is seen at `fine_lines` lines instead of
    # `detect_lines`, which finds the faces too small for the coarse search; each searched
    # frame between looks again, finely, only around those small faces. 0 lines: none.
    fine_lines: int = 480
    fine_every: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.detect_lines < 64 or self.detect_fps <= 0 or self.hold < 0 or self.spread < 0:
            raise ValueError(f"invalid redaction settings: {self}")
        if self.fine_lines and (self.fine_lines <= self.detect_lines or self.fine_every <= 0):
            raise ValueError(f"the fine search must be finer than the coarse one: {self}")

    def detector(self) -> FaceDetector:
        """A detector for these settings: faces of every size, one onnxruntime thread
        (parallelism comes from redacting several segments at once)."""
        return FaceDetector(threshold=self.threshold, min_size=0, threads=1)

    def scale(self, height: int, width: int) -> float:
        """How much a picture is shrunk before the detector sees it (never enlarged). A picture
        of at most NATIVE_LINES lines is searched as it is: its faces are small already."""
        lines = min(height, width)
        return 1.0 if lines <= NATIVE_LINES else min(1.0, self.detect_lines / lines)

    def stride(self, rate: Fraction) -> int:
        """Search every stride-th frame of a video at `rate` frames per second."""
        return max(1, round(float(rate) / self.detect_fps))

    def fine_scale(self, height: int, width: int) -> float | None:
        """How much a picture is shrunk for the fine search, or None when that would not be
        finer than `scale` (no fine search, or a picture searched at its own size already)."""
        if not self.fine_lines:
            return None
        fine = min(1.0, self.fine_lines / min(height, width))
        return fine if fine > self.scale(height, width) else None

    def fine_stride(self, rate: Fraction) -> int:
        """Frames between two fine searches of a video at `rate` frames per second: a
        multiple of `stride`, at least one stride."""
        stride = self.stride(rate)
        return stride * max(1, round(self.fine_every * float(rate) / stride))

    def describe(self) -> dict[str, object]:
        """The settings, for an export's manifest."""
        return {"name": "centerface", "landmarks": "dlib-5-point", **asdict(self),
                "native_lines": NATIVE_LINES,
                "unsure_below": DETECT_THRESHOLD, "unsure_growth": UNSURE_GROWTH,
                "algorithm": _ALGORITHM}

    def digest(self) -> str:
        """12 hex digits that change whenever the settings (or the algorithm) do."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def grown(box: Box, score: float) -> Box:
    """Where to blur a face detected with `score`: unsure faces over a larger box."""
    return box if score >= DETECT_THRESHOLD else box.expand(UNSURE_GROWTH)


def blur_boxes(faces: Iterable[Found | Face]) -> list[Box]:
    """Where to blur these detected faces (`grown`)."""
    return [grown(face.box, face.score) for face in faces]


def snapshot_scale(height: int, width: int) -> float:
    """How much a snapshot or live picture is shrunk for the detector (SNAPSHOT_LINES)."""
    return min(1.0, SNAPSHOT_LINES / min(height, width))


NODE_SETTINGS: Final = RedactionSettings()  # every redaction the node does, unless a test asks
