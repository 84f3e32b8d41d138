"""Redacted video is blurred in the encoder's own picture format (NV12: the Y plane, then U and
V interleaved at half size; `custodes.redaction.video._planes`): the colour of a face is
blurred where its brightness is, and the colour elsewhere is left as it was."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from custodes.media import ffmpeg_exe
from custodes.redaction.detect import NODE_SETTINGS
from custodes.redaction.video import BoxPlan, redact_file, redact_stream
from custodes.vision.faces import Box

U8 = npt.NDArray[np.uint8]
WIDTH, HEIGHT, FRAMES = 320, 240, 6
FACE = Box(96, 64, 96, 96)  # x, y, w, h: where the plan says a face is, in every frame


def colour_noise(target: Path) -> Path:
    """Blocks of 8 px of random colour (strong detail in U and V as well as Y), H.264."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1))
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", "10", "-i", "-",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", "-pix_fmt", "yuv420p",
         "-an", str(target)], input=rgb.tobytes() * FRAMES, check=True)
    assert proc.returncode == 0
    return target


def planes(path: Path) -> list[tuple[U8, U8, U8]]:
    """Each frame's Y, U and V planes (U and V at half size)."""
    result = []
    with av.open(str(path)) as container:
        for video in container.decode(video=0):
            rows = np.asarray(video.to_ndarray(format="yuv420p"), dtype=np.uint8)
            chroma = rows[HEIGHT:].reshape(2, HEIGHT // 2, WIDTH // 2)
            result.append((rows[:HEIGHT], chroma[0], chroma[1]))
    return result


def test_colour_is_blurred_with_the_face_and_kept_elsewhere(tmp_path: Path) -> None:
    source = colour_noise(tmp_path / "noise.mp4")
    plan = BoxPlan(settings=NODE_SETTINGS.digest(), frames=FRAMES, width=WIDTH,
                   height=HEIGHT, rate=Fraction(10), stride=3, detections=FRAMES,
                   faces_blurred=1, boxes={i: [FACE] for i in range(FRAMES)})
    exported = tmp_path / "export.mp4"
    redact_file(source, exported, plan=plan)
    streamed = tmp_path / "stream.mp4"
    with streamed.open("wb") as out:
        redact_stream(source, out, plan=plan)
    before = planes(source)
    for copy in (exported, streamed):
        after = planes(copy)
        assert len(after) == FRAMES
        for original, redacted in zip(before, after, strict=True):
            for k, (was, now) in enumerate(zip(original, redacted, strict=True)):
                f = 1 if k == 0 else 2  # U and V are at half size
                inner = (slice((FACE.y + FACE.h // 4) // f, (FACE.bottom - FACE.h // 4) // f),
                         slice((FACE.x + FACE.w // 4) // f, (FACE.right - FACE.w // 4) // f))
                # The face's middle: its detail gone, in brightness and in both colours.
                assert now[inner].std() < 0.3 * was[inner].std(), (copy.name, k)
                # Far from the face (its blur reaches FACE_MARGIN beyond the box): as it was,
                # each colour in its own plane (U and V swapped or mixed would not be).
                far = (slice(0, FACE.y // (2 * f)), slice(None))
                diff = np.abs(now[far].astype(int) - was[far].astype(int)).mean()
                assert diff < 6, (copy.name, k, diff)
