"""Live pictures: written by the analysis worker only while watched, redacted, atomically."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from custodes.analytics.worker import CameraAnalysis, Message, WorkerSpec
from custodes.config import AnalyticsConfig
from custodes.record.layout import Layout
from custodes.redaction.live import latest_live, picture_path, request_live, watch_path
from custodes.vision.decode import Frame, file_frames
from custodes.vision.faces import Box, FaceDetector

U8 = npt.NDArray[np.uint8]
HAMILTON = "face_recognition_short_hamilton_clip.mp4"
ZONE = [(0.7, 0.0), (1.0, 0.0), (1.0, 0.3), (0.7, 0.3)]  # top right: the broadcaster's logo


class Outbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def put(self, message: Message) -> None:
        self.messages.append(message)


def decode_jpeg(data: bytes) -> U8:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def grey(image: U8) -> U8:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def detail(image: U8, box: Box) -> float:
    patch = grey(image)[box.y:box.bottom, box.x:box.right]
    return float(cv2.Laplacian(patch, cv2.CV_64F).var())


def test_live_picture_only_while_watched_and_with_faces_blurred(shared_data: Path,
                                                                 tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    spec = WorkerSpec("stage", "unused", AnalyticsConfig(), layout.snapshots, live=layout.live,
                      zones=[ZONE])
    analysis = CameraAnalysis(spec, Outbox())
    assert analysis.live is not None
    analysis.live.check_every = 0.0  # look at the watch file on every frame
    # Capture times as if the clip were being filmed now, Miranda facing the camera at 6 s.
    start = time.time() - 6.2
    frames: list[Frame] = list(file_frames(shared_data / "video" / HAMILTON, 5, 640, start))
    picture = picture_path(layout.live, "stage")
    try:
        # Nobody watches: analysis runs, no picture is made.
        for frame in frames[:25]:
            analysis.process(frame)
        analysis.live.drain()
        assert not picture.exists()
        assert latest_live(layout, "stage", max_age=3600) is None

        # Someone asks: the newest analysed frame appears, redacted.
        request_live(layout, "stage")
        for frame in frames[25:31]:  # 5.0-6.0 s
            analysis.process(frame)
        analysis.live.drain()
        found = latest_live(layout, "stage", max_age=3600)  # however slow this machine is
        assert found is not None
        data, captured = found
        shown = min(frames, key=lambda f: abs(f.t - captured))
        assert abs(shown.t - captured) < 0.01  # the file's time is the capture time
        assert shown.t >= frames[28].t  # one of the last frames offered, not an old one
        detector = FaceDetector(min_size=0)
        (face,) = detector.detect(shown.rgb())  # Miranda faces the camera
        image = decode_jpeg(data)
        inner = face.box.expand(-0.15)
        assert detail(image, inner) < 0.05 * detail(shown.rgb(), inner)
        height, width = image.shape[:2]
        zone = Box(int(0.7 * width) + 2, 0, int(0.3 * width) - 2, int(0.3 * height) - 2)
        assert detail(image, zone) < 0.1 * detail(shown.rgb(), zone)
        assert not [p for p in layout.live.iterdir() if p.name.startswith(".")]

        # The viewer leaves: the picture is no longer renewed.
        old = time.time() - 60
        os.utime(watch_path(layout.live, "stage"), (old, old))
        for frame in frames[31:40]:
            analysis.process(frame)
        analysis.live.drain()
        assert latest_live(layout, "stage", max_age=3600) == found
    finally:
        analysis.live.close()
    analysis.flush()


def test_latest_live_ignores_an_old_picture(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    picture = picture_path(layout.live, "hall")
    picture.write_bytes(b"\xff\xd8jpeg")
    assert latest_live(layout, "hall") is not None
    old = time.time() - 60
    os.utime(picture, (old, old))
    assert latest_live(layout, "hall") is None
    assert latest_live(layout, "nowhere") is None
