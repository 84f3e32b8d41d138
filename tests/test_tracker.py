"""The face tracker: synthetic boxes, then detections on a real clip (shared/data)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import dlib  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pytest

from custodes.vision.faces import Box, Face, FaceDetector
from custodes.vision.tracker import SAMPLES, FinishedTrack, Tracker
from custodes.vision.weights import face_model_files

U8 = npt.NDArray[np.uint8]
HEIGHT, WIDTH = 360, 640
GREY = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
STEP = 0.2  # seconds between analysed frames: 5 fps


def black_rgb() -> U8:
    return np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)


def face(x: int, y: int, size: int = 60) -> Face:
    """A face box with landmarks where dlib's 5-point model would put them."""
    s = size
    points = [(x + 0.7 * s, y + 0.35 * s), (x + 0.58 * s, y + 0.35 * s),
              (x + 0.3 * s, y + 0.35 * s), (x + 0.42 * s, y + 0.35 * s),
              (x + 0.5 * s, y + 0.65 * s)]
    return Face(Box(x, y, s, s), 1.0, np.array(points, dtype=np.int32))


def run(tracker: Tracker, frames: list[list[Face]]) -> list[FinishedTrack]:
    """Feed one list of faces per frame, STEP apart, then flush."""
    finished: list[FinishedTrack] = []
    for n, faces in enumerate(frames):
        finished += tracker.update(n * STEP, faces, GREY, black_rgb)
    return finished + tracker.flush()


def test_a_moving_face_keeps_one_track() -> None:
    (track,) = run(Tracker(), [[face(100 + 15 * n, 100 + 5 * n)] for n in range(20)])
    assert track.detections == 20
    assert track.first_box == Box(100, 100, 60, 60)
    assert track.last_box == Box(100 + 15 * 19, 100 + 5 * 19, 60, 60)
    assert track.duration == pytest.approx(19 * STEP)


def test_a_fast_mover_keeps_one_track() -> None:
    # 50 px per frame with a 60 px face: consecutive boxes overlap by IoU 0.09, below the
    # threshold; the center-distance fallback joins the first two, the velocity the rest.
    (track,) = run(Tracker(), [[face(20 + 50 * n, 150)] for n in range(11)])
    assert track.detections == 11


def test_crossing_faces_keep_their_tracks() -> None:
    frames = [[face(100 + 20 * n, 150), face(500 - 20 * n, 160)] for n in range(20)]
    tracks = run(Tracker(), frames)
    assert len(tracks) == 2
    by_start = {track.first_box.x: track for track in tracks}
    assert by_start[100].last_box.x == 100 + 20 * 19  # went right all the way
    assert by_start[500].last_box.x == 500 - 20 * 19  # went left all the way
    assert all(track.detections == 20 for track in tracks)


def test_a_gap_longer_than_max_age_starts_a_new_track() -> None:
    present: list[Face] = [face(200, 100)]
    absent: list[Face] = []
    # Unseen for 0.8 s (three empty frames): the same track.
    assert len(run(Tracker(max_age=1.0), [present] * 3 + [absent] * 3 + [present] * 3)) == 1
    # Unseen for 1.2 s (five empty frames): the first track ends, a new one starts.
    tracks = run(Tracker(max_age=1.0), [present] * 3 + [absent] * 5 + [present] * 3)
    assert [t.detections for t in tracks] == [3, 3]
    assert tracks[0].id != tracks[1].id


def test_tracks_end_after_max_age_and_flush_ends_the_rest() -> None:
    tracker = Tracker(max_age=1.0)
    assert tracker.update(0.0, [face(100, 100)], GREY, black_rgb) == []
    assert tracker.update(0.5, [face(300, 100)], GREY, black_rgb) == []
    assert tracker.update(1.0, [], GREY, black_rgb) == []  # 1.0 s unseen is still alive
    (first,) = tracker.update(1.1, [], GREY, black_rgb)
    assert first.first_box.x == 100
    assert tracker.active == 1
    (second,) = tracker.flush()
    assert second.first_box.x == 300
    assert tracker.active == 0
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(0.5, [], GREY, black_rgb)


def test_predict_extrapolates_between_detections() -> None:
    tracker = Tracker()
    for n in range(3):
        tracker.update(n * STEP, [face(100 + 10 * n, 100)], GREY, black_rgb)  # 50 px/s
    assert tracker.predict(0.4 + 0.2) == [Box(130, 100, 60, 60)]
    assert tracker.predict(0.4 + 0.2, extrapolate=False) == [Box(120, 100, 60, 60)]
    assert tracker.predict(0.4 + 1.0) == [Box(120 + 50, 100, 60, 60)]
    assert tracker.predict(0.4 + 1.01) == []  # unseen for longer than max_age: gone


def test_the_rgb_frame_is_converted_only_for_a_face_kept() -> None:
    calls: list[int] = []

    def rgb() -> U8:
        calls.append(1)
        return black_rgb()

    tracker = Tracker()
    tracker.update(0.0, [], GREY, rgb)
    assert calls == []
    tracker.update(0.2, [face(100, 100), face(400, 100)], GREY, rgb)
    assert len(calls) == 1  # two new tracks, one conversion
    # Each track keeps its SAMPLES best faces: until it has them, every face is kept.
    for step in range(1, SAMPLES):
        tracker.update(0.2 + 0.2 * step, [face(100 + step, 100), face(400 + step, 100)], GREY,
                       rgb)
    assert len(calls) == SAMPLES
    tracker.update(1.0, [face(105, 100), face(405, 100)], GREY, rgb)
    assert len(calls) == SAMPLES  # quality 0 on a black frame: no better face, no conversion
    done = tracker.flush()
    assert [len(track.samples) for track in done] == [SAMPLES, SAMPLES]
    assert all(track.best is track.samples[0] for track in done)


# The real clip. -------------------------------------------------------------------------

@dataclass
class Frame:
    t: float
    grey: U8
    rgb: U8


def provider(image: U8) -> Callable[[], U8]:
    return lambda: image


def clip_frames(path: Path, every: int = 6) -> Iterator[Frame]:
    """Every 6th frame of a 29.97 fps clip: ~5 fps, what the analytics decode."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for n, frame in enumerate(container.decode(stream)):
            if n % every == 0:
                assert frame.time is not None
                yield Frame(frame.time, np.asarray(frame.to_ndarray(format="gray"), np.uint8),
                            np.asarray(frame.to_ndarray(format="rgb24"), np.uint8))


@pytest.mark.slow
def test_tracks_on_the_hamilton_clip(shared_data: Path) -> None:
    detector, tracker = FaceDetector(), Tracker(max_age=1.0)
    frames = list(clip_frames(shared_data / "video" / "face_recognition_short_hamilton_clip.mp4"))
    finished: list[tuple[float, FinishedTrack]] = []
    for frame in frames:
        faces = detector.detect(frame.rgb, grey=frame.grey)
        finished += [(frame.t, done) for done in
                     tracker.update(frame.t, faces, frame.grey, provider(frame.rgb))]
    finished += [(frames[-1].t, done) for done in tracker.flush()]

    # What the clip shows (looked at frame by frame), from its first frame at 0.85 s:
    #   0.85-1.5 s  wide shot of the stage: Miranda's face is ~44 px at the right (dlib's HOG
    #               did not find it), a 25 px face at the bottom left.
    #   1.6-3.5 s   close-ups of Miranda in profile over the audience: short tracks.
    #   3.65-7.86 s Miranda sings towards the camera: ONE appearance, found in every frame.
    #   8.06-9.86 s the audience, in three-quarter profile (HOG found only the woman at the
    #               top left): five guests, each followed through the whole shot.
    # The cut at 8.06 s puts a guest where Miranda was, at a similar size: the tracker has no
    # appearance model, so his track goes on with that guest (a CCTV camera has no cuts).
    tracks = [done for _, done in finished]
    wide = [t for t in tracks if t.first_seen < 0.9 and t.first_box.x > 500]
    assert len(wide) == 1
    assert wide[0].detections == 4  # every frame of the wide shot
    (miranda,) = [t for t in tracks if 3.5 < t.first_seen < 3.8]
    assert miranda.detections >= 21  # of the 22 frames in his shot (and more after the cut)
    assert miranda.best.time < 7.9  # his best face is his own, before the cut
    guests = [t for t in tracks if t.first_seen > 8.0 and t.detections >= 5]
    assert len(guests) >= 4
    # The 200 px close-up in profile is a poor face to describe, however large and sharp:
    # CenterFace's own points (which stay on a turned face) put the nose beside an eye.
    (profile,) = [t for t in tracks if 1.6 < t.first_seen < 1.7 and t.first_box.w > 150]
    assert profile.best.quality < 0.1
    assert miranda.best.quality > 0.5

    # A track ends on the first frame more than max_age after it was last seen.
    ended_at, early = next((t, done) for t, done in finished if done.last_seen < 3.5)
    assert early.last_seen + 1.0 < ended_at <= early.last_seen + 1.0 + STEP + 0.01

    rgb_at = {frame.t: frame.rgb for frame in frames}
    resnet = dlib.face_recognition_model_v1(str(face_model_files().resnet))
    for track in tracks:
        best = track.best
        height, width = best.image.shape[:2]
        assert best.image.shape == (height, width, 3)
        assert ((best.face.landmarks >= 0) & (best.face.landmarks < [width, height])).all()
        # The crop holds dlib's whole chip: its descriptor is the one from the whole frame.
        from_crop = resnet.compute_face_descriptor(best.image, best.face.dlib_shape())
        in_frame = best.face.shifted(*best.offset)
        assert in_frame.box == best.box
        from_frame = resnet.compute_face_descriptor(rgb_at[best.time], in_frame.dlib_shape())
        assert np.allclose(np.asarray(from_crop), np.asarray(from_frame), atol=1e-6)
