"""The fine search of redaction (`RedactionSettings.fine_lines`): small faces that the coarse
search of a 720p picture misses are found by a finer look every `fine_every` seconds, followed
between, and held to the fine searches next to them. Checked against WIDER FACE's hand-drawn
face boxes (shared/data/faceboxes) on a photo made into a slowly panning 720p clip."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from custodes.media import ffmpeg_exe
from custodes.redaction.blur import FACE_MARGIN
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings
from custodes.redaction.video import BoxPlan, BoxStream, plan_boxes
from custodes.vision.faces import Box

U8 = npt.NDArray[np.uint8]
# A drill squad: 29 annotated faces, 28 of them 10-25 px at 720 lines.
SQUAD = "26_Soldier_Drilling_Soldiers_Drilling_26_262.jpg"
PAN = 2  # px a frame
RATE = 15
FINE = dataclasses.replace(NODE_SETTINGS, fine_lines=480, fine_every=1.0)


def test_fine_search_settings_are_checked_and_apply_to_large_pictures_only() -> None:
    assert FINE.fine_scale(720, 1280) == pytest.approx(480 / 720)
    assert FINE.fine_scale(1080, 1920) == pytest.approx(480 / 1080)
    assert FINE.fine_scale(360, 640) is None  # searched at its own size already
    assert FINE.fine_stride(Fraction(15)) == 15  # every 5th search at 15 fps
    assert FINE.fine_stride(Fraction(25)) % FINE.stride(Fraction(25)) == 0
    assert FINE.digest() != dataclasses.replace(FINE, fine_lines=0).digest()
    with pytest.raises(ValueError, match="finer"):
        RedactionSettings(fine_lines=200)  # not finer than the 240 lines of the coarse one
    with pytest.raises(ValueError, match="finer"):
        RedactionSettings(fine_lines=480, fine_every=0)


@pytest.fixture(scope="module")
def squad(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Box]]:
    """The squad photo at 720 lines, panning PAN px a frame for 1.4 s, and its face boxes in
    the first frame."""
    folder = shared_data / "faceboxes"
    with (folder / "boxes.csv").open(newline="") as f:
        boxes = [Box(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))
                 for r in csv.DictReader(f) if r["image"] == SQUAD]
    bgr = cv2.imread(str(folder / SQUAD), cv2.IMREAD_COLOR)
    assert bgr is not None
    factor = 720 / min(bgr.shape[:2])
    bgr = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    height, width = bgr.shape[0] // 2 * 2, bgr.shape[1] // 2 * 2
    target = tmp_path_factory.mktemp("fine") / "squad.mp4"
    proc = subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo",
         "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", str(RATE), "-i", "-",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
         "-an", str(target)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(21):
        shift = np.array([[1, 0, PAN * i], [0, 1, 0]], dtype=np.float32)
        proc.stdin.write(cv2.warpAffine(bgr[:height, :width], shift, (width, height),
                                        borderMode=cv2.BORDER_REPLICATE).tobytes())
    proc.stdin.close()
    assert proc.wait() == 0
    faces = [Box.from_corners(b.x * factor, b.y * factor, b.right * factor,
                              b.bottom * factor) for b in boxes]
    return target, faces


def hidden(plan: BoxPlan, faces: list[Box]) -> tuple[int, int]:
    """(face-frames with 80 % of the face under a blur ellipse, face-frames)."""
    done = total = 0
    for i in range(plan.frames):
        mask = np.zeros((plan.height, plan.width), np.uint8)
        for box in plan.boxes.get(i, []):
            grown = box.expand(FACE_MARGIN)
            cx, cy = grown.center
            cv2.ellipse(mask, (round(cx), round(cy)), (grown.w // 2, grown.h // 2), 0, 0, 360,
                        255, thickness=-1)
        for face in faces:
            moved = face.shift(PAN * i, 0).clip(plan.width, plan.height)
            if moved.area < face.area // 2:
                continue
            total += 1
            under = np.count_nonzero(mask[moved.y:moved.bottom, moved.x:moved.right])
            done += int(under >= 0.8 * moved.area)
    return done, total


def test_the_fine_search_hides_small_faces_the_coarse_one_leaves(
        squad: tuple[Path, list[Box]]) -> None:
    clip, faces = squad
    coarse = plan_boxes(clip, dataclasses.replace(NODE_SETTINGS, fine_lines=0))
    fine = plan_boxes(clip, FINE)

    coarse_hidden, total = hidden(coarse, faces)
    fine_hidden, same = hidden(fine, faces)
    assert same == total > 20 * 15
    # The coarse search sees few of these faces; the fine one, followed between its looks and
    # held to them, most of them in every frame.
    assert fine_hidden >= 0.6 * total, (fine_hidden, total)
    assert fine_hidden >= coarse_hidden + 0.2 * total, (coarse_hidden, fine_hidden, total)


def test_streamed_boxes_with_the_fine_search_are_the_whole_files_plan(
        squad: tuple[Path, list[Box]]) -> None:
    """Small faces are held longer: a streamed frame waits for those that can be held back to
    it, and gets exactly the two-pass plan's boxes."""
    clip, _ = squad
    whole = plan_boxes(clip, FINE)
    stream = BoxStream(clip, FINE)
    streamed = {index: boxes for index, _, boxes in stream}

    assert streamed == {i: whole.boxes.get(i, []) for i in range(whole.frames)}
    assert stream.plan == whole
    scan = stream._scan
    assert scan.fine_searches >= 2  # the first frame, a second later, and the last
    assert scan.followed > 0
    # Held up to the next fine search after a small face's last sighting, half that before
    # its first (a viewer's first frame waits for every face that can be held back to it).
    assert scan.after >= scan.fine_stride
    assert scan.hold >= scan.fine_stride // 2
