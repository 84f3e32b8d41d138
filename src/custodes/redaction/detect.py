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

The detector's cost grows with the pixels it is fed (~100 ms for 640x360 on one thread of the
2-core box), so it sees every picture shrunk to at most `detect_lines` lines: the cost per
picture is bounded whatever the camera. Faces from ~10 px of the shrunk picture are found,
i.e. ~30 px of a 720p picture at 240 lines. 240 rather than 270 lines: a quarter less search
(16.6 against 22.6 ms per frame of a 720p 15 fps stream, searching every 3rd frame) for 305
detections on the shared 720p stream against 309.
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

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.detect_lines < 64 or self.detect_fps <= 0 or self.hold < 0 or self.spread < 0:
            raise ValueError(f"invalid redaction settings: {self}")

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
