"""Subject access exports: the requester stays visible when his faces reach the calibrated match
level, everybody else is blurred."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from custodes.faces.calibration import MatchLevel, level
from custodes.media import ffmpeg_exe
from custodes.redaction.subject_access import NoFaceInPhoto, subject_keep
from custodes.redaction.video import redact_file
from custodes.vision.embedding import MATCH_THRESHOLD, FaceEmbedder
from custodes.vision.faces import Box, FaceDetector

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
HAMILTON = "video/face_recognition_short_hamilton_clip.mp4"
MIRANDA = "faces/face_recognition/Lin-Manuel_Miranda/lin-manuel-miranda.png"
SPLIT = 1.5  # seconds into the excerpt: Miranda before, the audience after
# LFW photos (tests/test_subject_access.py's pair): the requester's reference photo, his photo
# in the footage (distance 0.27 between them), and a stranger at 0.57 from the reference.
REQUESTER_PHOTO = "Edmund_Stoiber_0001"
REQUESTER_SEEN = "Edmund_Stoiber_0003"
LOOKALIKE = "Dave_Tucker_0001"


def rgb_photo(path: Path) -> U8:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)


@pytest.fixture(scope="module")
def stage(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of the Hamilton clip at 10 fps: Miranda singing towards the camera (5.5-7.0 s),
    then the audience, among them Barack Obama (7.0-8.5 s)."""
    target = tmp_path_factory.mktemp("subject") / "stage.mp4"
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-ss", "5.5", "-i", str(shared_data / HAMILTON), "-t", "3",
        "-vf", "fps=10", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-an", str(target),
    ], check=True)
    return target


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder("onnx", threads=1)


Seen = list[list[tuple[Box, str, F32]]]  # per frame: box, name, descriptor


def identities(path: Path, miranda: F32, embedder: FaceEmbedder) -> Seen:
    """Per frame, every face the network is sure of (the analysis threshold, any size) with
    its descriptor, named "miranda" when within dlib's threshold of his photo, "someone"
    otherwise."""
    detector = FaceDetector(min_size=0)
    seen = []
    with av.open(str(path)) as container:
        for video in container.decode(video=0):
            rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
            faces = []
            for face in detector.detect(rgb):
                vector = embedder.embed(rgb, [face.dlib_shape()])[0]
                close = np.linalg.norm(vector - miranda) < MATCH_THRESHOLD
                faces.append((face.box, "miranda" if close else "someone", vector))
            seen.append(faces)
    return seen


def who(frames: Seen, name: str) -> list[int]:
    """The frames where someone of that name is found."""
    return [i for i, faces in enumerate(frames) if any(n == name for _, n, _ in faces)]


def reference(photo: U8, embedder: FaceEmbedder) -> F32:
    face = max(FaceDetector().detect(photo), key=lambda f: f.box.area)
    vector: F32 = embedder.embed(photo, [face.dlib_shape()])[0]
    return vector


def recognisable(before: Seen, after: Seen, name: str) -> list[tuple[int, Box]]:
    """Faces not called `name` in the original that are found after redaction at the same
    place and still within dlib's threshold of themselves: not hidden. (The network still
    finds blurred heads; what matters is that they can no longer be told apart.)"""
    return [(i, box) for i, (old, new) in enumerate(zip(before, after, strict=True))
            for box, n, vector in old if n != name
            for other, _, again in new
            if box.iou(other) >= 0.3 and np.linalg.norm(again - vector) < MATCH_THRESHOLD]


def lfw(shared_data: Path, name: str) -> U8:
    person = name.rsplit("_", 1)[0]
    return rgb_photo(shared_data / "faces" / "lfw" / person / f"{name}.jpg")


@pytest.fixture(scope="module")
def pair(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 10 fps of two real press photos side by side, enlarged 2x (faces ~200 px):
    Edmund Stoiber (left) and Dave Tucker, whose face is close to Stoiber's (right)."""
    target = tmp_path_factory.mktemp("pair") / "pair.mp4"
    photos = [shared_data / "faces" / "lfw" / n.rsplit("_", 1)[0] / f"{n}.jpg"
              for n in (REQUESTER_SEEN, LOOKALIKE)]
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        *[arg for photo in photos for arg in ("-loop", "1", "-t", "2", "-i", str(photo))],
        "-filter_complex", "[0:v][1:v]hstack,scale=1000:500,fps=10", "-c:v", "libx264",
        "-preset", "veryfast", "-pix_fmt", "yuv420p", str(target),
    ], check=True)
    return target


def faces_in(path: Path, embedder: FaceEmbedder) -> list[list[tuple[Box, F32]]]:
    """Per frame, every face found (any size, the analysis threshold) and its descriptor."""
    detector = FaceDetector(min_size=0)
    found = []
    with av.open(str(path)) as container:
        for video in container.decode(video=0):
            rgb = np.asarray(video.to_ndarray(format="rgb24"), dtype=np.uint8)
            found.append([(face.box, embedder.embed(rgb, [face.dlib_shape()])[0])
                          for face in detector.detect(rgb)])
    return found


@pytest.mark.slow
def test_the_requester_is_shown_and_a_lookalike_stays_blurred(
        shared_data: Path, pair: Path, embedder: FaceEmbedder, tmp_path: Path) -> None:
    photo = lfw(shared_data, REQUESTER_PHOTO)
    requester = reference(photo, embedder)
    lookalike = reference(lfw(shared_data, LOOKALIKE), embedder)
    # The photos: the requester's other photo is a match; the lookalike only "possible",
    # which dlib's 0.6 (the old rule) would have taken for the requester.
    assert level(float(np.linalg.norm(reference(lfw(shared_data, REQUESTER_SEEN), embedder)
                                      - requester))) is MatchLevel.MATCH
    assert level(float(np.linalg.norm(lookalike - requester))) is MatchLevel.POSSIBLE
    before = faces_in(pair, embedder)
    assert all(len(faces) == 2 for faces in before)
    out = tmp_path / "requester.mp4"

    info = redact_file(pair, out, keep=subject_keep(photo, embedder=embedder))

    after = faces_in(out, embedder)
    assert (info["faces_kept"], info["faces_blurred"]) == (1, 1)
    middle = 500  # the requester on the left, the lookalike on the right
    for faces in after:
        # The requester, as himself, at the match level, in every frame.
        assert any(box.center[0] < middle
                   and level(float(np.linalg.norm(vector - requester))) is MatchLevel.MATCH
                   for box, vector in faces)
        # The lookalike cannot be recognised: no face on his side is even close to him.
        assert all(np.linalg.norm(vector - lookalike) >= MATCH_THRESHOLD
                   for box, vector in faces if box.center[0] >= middle)


@pytest.mark.slow
def test_a_requester_only_possibly_matched_stays_blurred(
        shared_data: Path, stage: Path, embedder: FaceEmbedder, tmp_path: Path) -> None:
    """Miranda's close-up against his one reference photo: distances 0.40-0.51, "possible"
    only. Fail closed: he is blurred like everybody else, and nobody is recognisable."""
    photo = rgb_photo(shared_data / MIRANDA)
    miranda = reference(photo, embedder)
    before = identities(stage, miranda, embedder)
    # The excerpt shows Miranda, then the audience (other people, among them Barack Obama).
    assert len(who(before, "miranda")) >= 10
    assert len(who(before[int(SPLIT * 10):], "someone")) >= 5
    out = tmp_path / "subject.mp4"

    info = redact_file(stage, out, keep=subject_keep(photo, embedder=embedder))

    after = identities(out, miranda, embedder)
    assert info["keep"] == "subject"
    assert info["faces_kept"] == 0
    assert who(after, "miranda") == []
    assert recognisable(before, after, "miranda") == []


def test_a_photo_without_a_face_is_refused(shared_data: Path, embedder: FaceEmbedder) -> None:
    dogs = rgb_photo(shared_data / "crowds" / "dlib_dogs.jpg")
    with pytest.raises(NoFaceInPhoto):
        subject_keep(dogs, embedder=embedder)


@pytest.mark.slow
def test_a_stranger_s_photo_keeps_nobody(
        shared_data: Path, stage: Path, embedder: FaceEmbedder, tmp_path: Path) -> None:
    """Every track is judged and found not to be the requester: all faces blurred."""
    stranger = rgb_photo(shared_data / "faces" / "face_recognition" / "Joseph_Biden" /
                         "biden.jpg")
    out = tmp_path / "nobody.mp4"
    info = redact_file(stage, out, keep=subject_keep(stranger, embedder=embedder))
    assert info["faces_kept"] == 0
    assert isinstance(info["faces_blurred"], int)
    assert info["faces_blurred"] >= 3
