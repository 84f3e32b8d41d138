"""What `custodes demo` sets up: simulated cameras (the test pattern, or your own clips), a
configuration for them, and the steps to try a case end to end.

With ``--video`` each clip becomes one camera, re-encoded as a camera would send it and
served over RTSP on loopback by the simulator. Under a profile that stores face descriptors
(municipal, police) the demo turns them on, so a face search has something to find; and for
each clip it cuts out a photo of the clearest face it finds, to use as a case's subject photo
(a real case brings its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import av
import cv2
import numpy as np

from custodes.privacy.policy import Action, Profile, allows
from custodes.sim import SimServer, ensure_sample, prepare_clip

if TYPE_CHECKING:
    from custodes.vision.faces import Box, FaceDetector

log = logging.getLogger(__name__)

LOCATIONS: Final = ("entrance", "corridor", "exterior", "corridor")
# Frames looked at for a subject photo, spread over the clip.
PHOTO_CANDIDATES: Final = 24
PHOTO_MIN_FACE: Final = 48  # pixels; a reference photo's face must be describable (>= 40)


@dataclass(frozen=True)
class DemoCamera:
    name: str
    url: str
    purpose: str
    clip: Path | None  # the user's clip, None for the generated pattern


def demo_cameras(sim: SimServer, data: Path, videos: list[Path], count: int, *, width: int,
                 height: int, bitrate: int) -> list[DemoCamera]:
    """One camera per clip in ``videos``; without clips, ``count`` cameras of the pattern."""
    if videos:
        cameras = []
        for i, video in enumerate(videos, start=1):
            name = f"cam{i:02d}"
            clip = prepare_clip(video, data / "samples", width=width, height=height, fps=15,
                                bitrate_kbps=bitrate)
            cameras.append(DemoCamera(name, sim.add_camera(name, clip),
                                      f"Demonstration: your clip {video.name}", video))
        return cameras
    sample = ensure_sample(data / "samples", width=width, height=height, fps=15,
                           bitrate_kbps=bitrate, codec="h264", seconds=10)
    return [DemoCamera(f"cam{i:02d}", sim.add_camera(f"cam{i:02d}", sample),
                       "Demonstration: simulated camera (generated test pattern)", None)
            for i in range(1, count + 1)]


def demo_config(cameras: list[DemoCamera], port: int, profile: Profile) -> dict[str, object]:
    # Descriptors only where the profile stores them: the school profile refuses the setting.
    embeddings = allows(profile, Action.EMBED)
    return {
        "profile": profile.value,
        "node": {"name": "demo"},
        "sites": {"demo-school": {"name": "Demo primary school"}},
        "cameras": {
            cam.name: {
                "site": "demo-school",
                "location": LOCATIONS[i % len(LOCATIONS)],
                "purpose": cam.purpose,
                "main_url": cam.url,
                **({"analytics": {"faces": {"embeddings": True}}} if embeddings else {}),
            }
            for i, cam in enumerate(cameras)
        },
        "storage": {"path": ".", "quota": "10GB"},
        "security": {"key_dir": "keys"},
        "server": {"host": "127.0.0.1", "port": port},
    }


def _frames(clip: Path, wanted: int) -> list[np.ndarray]:
    """About ``wanted`` RGB frames spread evenly over ``clip``."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        step = max(1, total // wanted) if total else 15
        frames = []
        for index, frame in enumerate(container.decode(stream)):
            if index % step == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= wanted:
                break
    return frames


def subject_photo(clip: Path, out: Path, detector: FaceDetector | None = None) -> Path | None:
    """Write to ``out`` a photo of the clearest face in ``clip``, alone in the picture; None
    when the clip shows no face large enough to be searched for."""
    if detector is None:
        # Here, not at the top: every `custodes` command imports this module, and only the
        # demo with clips needs the face network.
        from custodes.vision.faces import FaceDetector  # noqa: PLC0415

        detector = FaceDetector()
    candidates: list[tuple[float, np.ndarray, Box]] = []
    for rgb in _frames(clip, PHOTO_CANDIDATES):
        for face in detector.detect(rgb, min_size=PHOTO_MIN_FACE):
            candidates.append((face.score * face.box.area, rgb, face.box))
    candidates.sort(key=lambda c: c[0], reverse=True)
    for _, rgb, box in candidates[:10]:
        height, width = rgb.shape[:2]
        crop_box = box.expand(0.5).clip(width, height)
        crop = np.ascontiguousarray(rgb[crop_box.y:crop_box.bottom, crop_box.x:crop_box.right])
        # A neighbour's face in the margin would make the photo useless as a reference.
        if len(detector.detect(crop, min_size=PHOTO_MIN_FACE // 2)) != 1:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out}")
        return out
    return None


def case_steps(config: Path, profile: Profile, camera: str, photo: Path | None) -> list[str]:
    """How to try a case from opening to export, with this demo's names filled in."""
    if not allows(profile, Action.SEARCH):
        return [f"the {profile.value} profile identifies nobody: no cases. To try one, run "
                "custodes demo --profile municipal --video YOUR-CLIP.mp4 (another --data "
                "folder)"]
    c = f"-c {config}"
    steps = [
        "try a case (the README's 'A case, end to end' explains each step):",
        f"  1. custodes user add ivan --role investigator {c}",
        f"     custodes user add dora --role approver {c}",
        "     each waits for a second administrator: sign in as admin in the browser, "
        "choose your password, and confirm both grants (their passwords are shown once)",
        f"  2. CUSTODES_PASSWORD=<ivan's> custodes case open {c} --user ivan "
        "--reference DEMO-1 --legal-basis 'demonstration' --purpose 'find the person' "
        f"--camera {camera} --from <10 min ago, ISO> --to <in 15 min, ISO> "
        f"--expires <next week, ISO> --photo {photo or 'PHOTO-OF-ONE-FACE.jpg'}",
        f"  3. CUSTODES_PASSWORD=<dora's> custodes case approve {c} --user dora 1",
        f"  4. CUSTODES_PASSWORD=<ivan's> custodes case search {c} --user ivan 1",
        f"  5. custodes export create {c} --camera {camera} --from <a hit's time - 10 s> "
        "--to <+ 20 s> --case 1 demo-export   (or Exports in the browser; the zip's "
        "README.txt says how to verify it with openssl)",
    ]
    if photo is None:
        steps.append("     (no face was found in your clip to use as the subject photo: "
                     "bring a photo of one person in it)")
    return steps
