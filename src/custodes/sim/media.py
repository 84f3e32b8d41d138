"""Synthetic sample videos that look, to a recorder, like what an IP camera sends."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import imageio_ffmpeg

log = logging.getLogger(__name__)

Codec = Literal["h264", "h265"]

# Bump when the ffmpeg recipe changes, so cached samples made by an older recipe are not reused.
_RECIPE = 1

# Above this many pixels per frame x264/x265 "veryfast" makes generation take many seconds.
_BIG_FRAME = 1920 * 1080


def sample_name(
    *, width: int, height: int, fps: int, bitrate_kbps: int, codec: Codec, seconds: int
) -> str:
    return f"sim-r{_RECIPE}-{codec}-{width}x{height}-{fps}fps-{bitrate_kbps}k-{seconds}s.mp4"


def ensure_sample(
    cache_dir: Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    bitrate_kbps: int = 1000,
    codec: Codec = "h264",
    seconds: int = 10,
) -> Path:
    """Return an MP4 (video only) made from lavfi test sources, generating it on first use.

    Encoded like an IP camera: no B-frames, a closed one-second GOP and a capped bitrate, so the
    simulator's stream has the keyframe cadence and packet sizes a recorder meets in the field.
    """
    if codec not in ("h264", "h265"):
        raise ValueError(f"codec must be 'h264' or 'h265', not {codec!r}")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (yuv420p)")
    if min(width, height, fps, bitrate_kbps, seconds) <= 0:
        raise ValueError("width, height, fps, bitrate_kbps and seconds must be positive")

    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / sample_name(
        width=width,
        height=height,
        fps=fps,
        bitrate_kbps=bitrate_kbps,
        codec=codec,
        seconds=seconds,
    )
    if target.exists():
        return target

    # The box's period equals the clip length, so the looped stream has no jump at the seam.
    box = (
        f"drawbox=x='(iw-w)*(0.5+0.5*sin(2*PI*t/{seconds}))':y='ih/3':w='iw/6':h='ih/4'"
        ":color=white:t=fill"
    )
    preset = "ultrafast" if width * height > _BIG_FRAME else "veryfast"
    encoder = _camera_encoder(codec, fps, preset, bitrate_kbps)
    source = f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"

    return _encode(["-f", "lavfi", "-i", source], box, encoder, target)


def _camera_encoder(codec: Codec, fps: int, preset: str, kbps: int) -> list[str]:
    """Encoder arguments for an IP camera's stream: no B-frames, closed 1 s GOP, capped rate."""
    if codec == "h264":
        encoder = (
            f"-c:v libx264 -preset {preset} -bf 0 -g {fps} -keyint_min {fps} -sc_threshold 0"
            " -flags +cgop"
        ).split()
    else:
        x265 = f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:open-gop=0:log-level=error"
        encoder = f"-c:v libx265 -preset {preset} -x265-params {x265} -tag:v hvc1".split()
    return [*encoder, *f"-b:v {kbps}k -maxrate {kbps}k -bufsize {kbps}k -pix_fmt yuv420p".split()]


def prepare_clip(
    source: Path, cache_dir: Path, *, width: int = 640, height: int = 360, fps: int = 15,
    bitrate_kbps: int = 800,
) -> Path:
    """A real video re-encoded as a camera would send it (size, rate, GOP), for the simulator.

    The picture is scaled to fit ``width`` x ``height`` and padded, so clips of any shape
    become one camera's stream. Cached by source name and parameters.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / (
        f"clip-r{_RECIPE}-{source.stem}-{width}x{height}-{fps}fps-{bitrate_kbps}k.mp4"
    )
    if target.exists():
        return target
    fit = (
        f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,fps={fps}"
    )
    encoder = _camera_encoder("h264", fps, "veryfast", bitrate_kbps)
    return _encode(["-i", str(source)], fit, encoder, target)


def _encode(inputs: list[str], video_filter: str, encoder: list[str], target: Path) -> Path:
    # Temp file in the same directory so the final rename is atomic; concurrent callers each
    # write their own temp file and the last rename wins with identical content.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".mp4", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        *inputs, "-vf", video_filter, *encoder, "-an", "-f", "mp4", str(tmp),
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg failed to make {target.name}: {result.stderr.strip()}")
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the sample from a recorder run as another user
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("made %s in %.1f s", target.name, time.monotonic() - started)
    return target
