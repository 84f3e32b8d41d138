"""Redaction blurs faces turned away from the camera too, checked by a detector of another
kind: dlib's CNN (MMOD) face detector, trained on other data than the redactor's CenterFace,
so it sees what a re-scan with the redactor's own network would be blind to."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import av
import dlib  # type: ignore[import-untyped]  # dlib ships no type information
import face_recognition_models  # type: ignore[import-untyped]  # neither does this
import numpy as np
import numpy.typing as npt
import pytest

from custodes.media import ffmpeg_exe
from custodes.redaction.blur import redact_snapshot
from custodes.redaction.detect import NODE_SETTINGS
from custodes.redaction.video import redact_file
from custodes.vision.faces import Box

U8 = npt.NDArray[np.uint8]
HAMILTON = "video/face_recognition_short_hamilton_clip.mp4"
# 7.6-9.6 s: the audience (the Obamas and their neighbours), laughing, faces turned towards
# the stage at the side, ~70-100 px (dlib's HOG found one or two of the four faces there).
AUDIENCE = 7.6
FPS = 5


@pytest.fixture(scope="module")
def auditor() -> Any:
    return dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location())


def audit(auditor: Any, rgb: U8) -> list[Box]:
    """Faces the CNN finds, upsample 0 (from ~80 px, ~1.4 s for 640x360 on the 2-core box)."""
    return [Box.from_corners(d.rect.left(), d.rect.top(), d.rect.right() + 1,
                             d.rect.bottom() + 1)
            for d in auditor(np.ascontiguousarray(rgb), 0)]


def frames(path: Path) -> list[U8]:
    with av.open(str(path)) as container:
        return [np.asarray(v.to_ndarray(format="rgb24"), dtype=np.uint8)
                for v in container.decode(video=0)]


@pytest.fixture(scope="module")
def audience(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("recall") / "audience.mp4"
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-ss", str(AUDIENCE), "-i", str(shared_data / HAMILTON), "-t", "2",
        "-vf", f"fps={FPS}", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-an", str(target),
    ], check=True)
    return target


@pytest.mark.slow
def test_an_export_blurs_the_turned_audience(audience: Path, auditor: Any,
                                             tmp_path: Path) -> None:
    out = tmp_path / "redacted.mp4"

    info = redact_file(audience, out)

    before, after = frames(audience), frames(out)
    assert len(before) == len(after) == 2 * FPS
    audited = [0, len(before) // 2, len(before) - 1]
    assert sum(len(audit(auditor, before[i])) for i in audited) >= 2 * len(audited), \
        "the audience should show several faces"
    for i in audited:
        assert audit(auditor, after[i]) == [], f"a face left visible in frame {i}"
    detector = info["detector"]
    assert isinstance(detector, dict)
    assert detector["name"] == "centerface"


def test_a_snapshot_blurs_faces_in_profile(shared_data: Path, auditor: Any) -> None:
    with av.open(str(shared_data / HAMILTON)) as container:
        image = next(np.asarray(v.to_ndarray(format="rgb24"), dtype=np.uint8)
                     for v in container.decode(video=0) if v.time is not None and v.time >= 8.0)
    before = audit(auditor, image)
    assert len(before) >= 3, "the audience, turned to the stage, should be found"

    redacted = redact_snapshot(image, NODE_SETTINGS.detector())

    assert audit(auditor, redacted) == []
