"""Redacted video exports, checked by re-scanning real footage (shared/data) for faces."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.media import ffmpeg_exe, probe
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings
from custodes.redaction.video import (
    HOLD_GROWTH,
    MAX_GAP,
    BoxPlan,
    BoxStream,
    RedactionError,
    _Track,
    plan_boxes,
    redact_file,
    redact_stream,
)
from custodes.vision.faces import DETECT_THRESHOLD, SMALLEST_FACE, Box, Face, FaceDetector

U8 = npt.NDArray[np.uint8]
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
ARCADE = "facenet-pytorch_video.mp4"  # pedestrians walking towards the camera, 1080p
TOP_RIGHT = [(0.6, 0.0), (1.0, 0.0), (1.0, 0.4), (0.6, 0.4)]  # has detail in every shot


def cut(source: Path, target: Path, start: float, seconds: float, fps: int) -> Path:
    """A short 640 px wide H.264 excerpt of a real clip, so that a test runs in seconds."""
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-ss", str(start), "-i", str(source), "-t", str(seconds),
        "-vf", f"scale=640:-2,fps={fps}", "-c:v", "libx264", "-preset", "veryfast",
        "-pix_fmt", "yuv420p", "-an", str(target),
    ], check=True)
    return target


@pytest.fixture(scope="module")
def excerpts(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("excerpts")
    video = shared_data / "video"
    return {
        # Miranda sings facing the camera, then the audience (the Obamas and others) laughs.
        "stage": cut(video / HAMILTON, folder / "stage.mp4", 5.5, 3.0, 10),
        # Several passers-by at once, faces of ~15-35 px at 640 px.
        "arcade": cut(video / ARCADE, folder / "arcade.mp4", 1.0, 2.0, 10),
    }


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    # Faces the network is sure of (the analysis threshold), of a size it can see.
    return FaceDetector(threshold=DETECT_THRESHOLD, min_size=SMALLEST_FACE)


def frames(path: Path) -> Iterator[U8]:
    with av.open(str(path)) as container:
        for video in container.decode(video=0):
            yield np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)


def scan(path: Path, detector: FaceDetector) -> list[list[Face]]:
    """Faces in every frame, looking more finely than the redactor: every frame, at full
    size (the redactor searches every 3rd frame at 15 fps, at 270 lines)."""
    return [detector.detect(rgb) for rgb in frames(path)]


def detail(image: U8, box: Box) -> float:
    box = box.clip(image.shape[1], image.shape[0])
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[box.y:box.bottom, box.x:box.right]
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def uncovered(before: list[list[Face]], plan: BoxPlan) -> list[tuple[int, Box]]:
    """Faces of the original whose inner part (eyes, nose, mouth) is not inside what the plan
    blurs in that frame (its boxes grown by blur_regions' margin). A re-scan of the redacted
    copy would not tell: the network still finds blurred heads."""
    return [(i, face.box) for i, faces in enumerate(before) for face in faces
            if not any((inner := face.box.expand(-0.15)).intersection(box.expand(0.25))
                       >= 0.9 * inner.area for box in plan.boxes.get(i, ()))]


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["stage", "arcade"])
def test_a_redacted_export_rescanned_shows_no_face(excerpts: dict[str, Path], clip: str,
                                                   detector: FaceDetector,
                                                   tmp_path: Path) -> None:
    source = excerpts[clip]
    before = scan(source, detector)
    assert sum(map(len, before)) >= 20, "the excerpt should show faces"
    out = tmp_path / "redacted.mp4"

    plan = plan_boxes(source)
    info = redact_file(source, out, plan=plan)

    after, original = list(frames(out)), list(frames(source))
    assert len(after) == len(before)
    assert uncovered(before, plan) == []
    # And blurred there: the faces' detail, all together, mostly gone (a 25 px face keeps a
    # little, from its few blocks and the encoder).
    inner = [(i, face.box.expand(-0.15)) for i, faces in enumerate(before) for face in faces]
    assert (sum(detail(after[i], box) for i, box in inner)
            < 0.1 * sum(detail(original[i], box) for i, box in inner))
    assert info["applied"] is True
    assert info["method"] == "pixelate+blur"
    assert info["keep"] is None
    assert isinstance(info["faces_blurred"], int)
    assert info["faces_blurred"] >= 1
    described = info["detector"]
    assert isinstance(described, dict)
    assert described["name"] == "centerface"
    assert described["stride"] == 2  # 10 fps: every 2nd frame searched


def test_the_export_is_h264_with_the_same_frames_and_the_zone_obscured(
        excerpts: dict[str, Path], tmp_path: Path) -> None:
    source = excerpts["stage"]
    out = tmp_path / "zoned.mp4"

    info = redact_file(source, out, zones=[TOP_RIGHT])

    assert info["zones"] == 1
    facts, original = probe(out), probe(source)
    assert facts.codec == "h264"
    assert (facts.width, facts.height) == (original.width, original.height)
    assert abs(facts.duration - original.duration) < 0.15
    with av.open(str(out)) as container:
        assert not container.streams.audio
        rate = container.streams.video[0].average_rate
        assert rate is not None
        assert float(rate) == pytest.approx(10.0, abs=0.01)
    after, before = list(frames(out)), list(frames(source))
    assert abs(len(after) - len(before)) <= 1
    zone = Box(int(0.6 * original.width) + 2, 0, int(0.4 * original.width) - 2,
               int(0.4 * original.height) - 2)
    for new, old in zip(after, before, strict=False):
        # Pixelated and blurred: almost no detail left in the zone, in every frame.
        assert detail(new, zone) < 0.1 * detail(old, zone)
    assert no_temp_files(tmp_path)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_unreadable_input_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out.mp4"
    with pytest.raises(RedactionError, match=r"junk\.mp4"):
        redact_file(junk, out)
    assert not out.exists()
    assert no_temp_files(tmp_path)
    with pytest.raises(RedactionError, match="exists already"):
        redact_file(junk, junk)


def test_a_copy_for_viewers_is_shrunk_and_reuses_the_boxes(excerpts: dict[str, Path],
                                                           tmp_path: Path) -> None:
    source = excerpts["stage"]  # 640x360
    plan = plan_boxes(source)
    saved = tmp_path / "stage.boxes.json"
    plan.save(saved)
    reused = BoxPlan.load(saved, NODE_SETTINGS)
    assert reused == plan
    assert plan.boxes, "the stage shows faces"
    # Other settings search again rather than trust boxes made for these.
    assert BoxPlan.load(saved, RedactionSettings(detect_fps=2.0)) is None

    info = redact_file(source, tmp_path / "small.mp4", plan=reused, max_lines=240)

    facts = probe(tmp_path / "small.mp4")
    assert (facts.width, facts.height) == (426, 240)
    assert info["size"] == [426, 240]
    assert info["detections"] == plan.detections
    with pytest.raises(ValueError, match="same settings"):
        redact_file(source, tmp_path / "other.mp4", plan=reused,
                    settings=RedactionSettings(detect_fps=2.0))


@pytest.mark.parametrize("clip", ["stage", "arcade"])
def test_streamed_boxes_cover_the_whole_files_plan_frame_by_frame(
        excerpts: dict[str, Path], clip: str, tmp_path: Path) -> None:
    """A viewer's copy is blurred while the file is searched (BoxStream): each frame must get
    at least the boxes the two-pass plan gives it, though it leaves long before the search
    ends. Real clips: faces come, go, and are missed between sightings; the stage has cuts."""
    source = excerpts[clip]
    whole = plan_boxes(source)
    stream = BoxStream(source)
    decoded = []  # frames decoded when each frame was handed out
    streamed: dict[int, list[Box]] = {}
    for index, _, boxes in stream:
        streamed[index] = boxes
        decoded.append(stream._scan.frames if not stream._scan.finished else None)

    assert list(streamed) == list(range(whole.frames))
    missed = [(i, box) for i, boxes in whole.boxes.items() for box in boxes
              if not any(s.intersection(box) == box.area for s in streamed[i])]
    assert missed == []
    # Nor more: a frame waits until its boxes are final (BoxStream), they are not guessed.
    assert streamed == {i: whole.boxes.get(i, []) for i in range(whole.frames)}
    assert sum(map(len, whole.boxes.values())) >= 20, "the excerpt should show faces"
    # Handed out early: at most hold + MAX_GAP frames (and a stride) after it is decoded.
    scan = stream._scan
    bound = scan.hold + math.ceil(MAX_GAP * float(scan.rate)) + scan.stride
    early = [n - i for i, n in enumerate(decoded) if n is not None]
    assert early, "no frame left before the file was decoded to its end"
    assert max(early) <= bound
    # The streamed search's plan is the segment's plan: kept, it serves later copies.
    assert stream.plan == whole
    with (tmp_path / "copy.mp4").open("wb") as out:
        again = redact_stream(source, out, plan=stream.plan)
    assert again is stream.plan


def test_a_streamed_copy_is_fragmented_mp4_with_every_frame(excerpts: dict[str, Path],
                                                             tmp_path: Path) -> None:
    source = excerpts["arcade"]
    target = tmp_path / "streamed.mp4"
    with target.open("wb") as out:
        plan = redact_stream(source, out, zones=[TOP_RIGHT], max_lines=240)

    head = target.read_bytes()[:4096]
    # An index without samples first, then fragments: a player can start on the first bytes.
    assert head[4:8] == b"ftyp"
    assert head.index(b"moov") < head.index(b"moof")
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (426, 240)
        assert sum(1 for _ in container.decode(stream)) == plan.frames
    assert plan.frames == sum(1 for _ in frames(source))
    assert plan.boxes, "the arcade shows faces"
    # A failed redaction says why; what it wrote is the caller's to throw away.
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with (tmp_path / "out.mp4").open("wb") as out, pytest.raises(RedactionError):
        redact_stream(junk, out)


def test_frames_between_searches_are_blurred_wider_the_further_they_are() -> None:
    track = _Track(1, frames=[10, 16], seen=[Box(100, 100, 40, 40), Box(130, 100, 40, 40)])
    track.boxes = list(track.seen)
    spread = 0.1  # per side, in box sizes, per frame away from a search
    hold = 5

    assert track.box_at(10, hold, spread) == Box(100, 100, 40, 40)  # searched: as detected
    near, far = track.box_at(11, hold, spread), track.box_at(13, hold, spread)
    assert near is not None
    assert far is not None
    assert near.w > 40
    assert far.w > near.w  # further from both searches: wider
    assert near.intersection(Box(105, 100, 40, 40)) == 40 * 40  # holds where the face went
    before, long_before = track.box_at(8, hold, spread), track.box_at(5, hold, spread)
    assert before is not None
    assert long_before is not None
    assert before.w > 40 * (1 + 2 * HOLD_GROWTH)  # held: grown more than any seen box
    assert long_before.w > before.w
    assert track.box_at(4, hold, spread) is None  # beyond the hold


def test_the_redact_command_blurs_a_clip(excerpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "redacted.mp4"

    result = CliRunner().invoke(app, ["redact", str(excerpts["arcade"]), str(out)])

    assert result.exit_code == 0, result.output
    assert "faces blurred" in result.output
    assert probe(out).frames == probe(excerpts["arcade"]).frames
    again = CliRunner().invoke(app, ["redact", str(excerpts["arcade"]), str(out)])
    assert again.exit_code == 1
    assert "exists already" in again.output


def test_small_pictures_are_searched_at_their_own_size(shared_data: Path) -> None:
    """Shrinking a sub-stream picture loses its small faces: the store-aisle clip (480x270)
    shows faces at its own size that 240 lines miss."""
    settings = RedactionSettings()
    assert settings.scale(270, 480) == 1.0
    assert settings.scale(360, 640) == 1.0
    assert settings.scale(720, 1280) == pytest.approx(240 / 720)
    with av.open(str(shared_data / "video" / "intel_store-aisle-detection_from-gif.mp4")) as c:
        frames = [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8)
                  for i, f in enumerate(c.decode(video=0)) if i % 10 == 0]
    detector = settings.detector()
    native = sum(len(detector.detect(rgb, scale=settings.scale(270, 480))) for rgb in frames)
    shrunk = sum(len(detector.detect(rgb, scale=240 / 270)) for rgb in frames)
    assert native > shrunk
