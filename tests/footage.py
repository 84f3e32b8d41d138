"""Real footage for tests: camera-like MP4 segments made with ffmpeg, indexed in a real store."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import insert

from custodes.media import ffmpeg_exe
from custodes.record.layout import Layout
from custodes.store.db import Store
from custodes.store.schema import segments

SEGMENT_SECONDS = 2.0


def encode_clips(folder: Path, count: int = 6) -> list[Path]:
    """``count`` camera-like MP4 segments of 2 s: H.264, 320x240, 15 fps, 1 s GOP, no B-frames."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15",
            "-t", str(count * SEGMENT_SECONDS),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "15", "-keyint_min", "15", "-sc_threshold", "0", "-bf", "0",
            "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-reset_timestamps", "1",
            "-segment_format", "mp4", str(folder / "clip%03d.mp4"),
        ],
        check=True,
    )
    clips = sorted(folder.glob("clip*.mp4"))
    assert len(clips) == count
    return clips


def add_segments(
    store: Store, layout: Layout, camera: str, starts: list[float], clips: list[Path]
) -> list[int]:
    """Copy a clip to the place of each start time and index it; return the row ids."""
    rows = []
    for n, start in enumerate(starts):
        target = layout.segment_path(camera, start)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[n % len(clips)], target)
        rows.append({
            "camera": camera, "start": start, "end": start + SEGMENT_SECONDS,
            "duration": SEGMENT_SECONDS, "bytes": target.stat().st_size,
            "path": target.relative_to(layout.recordings).as_posix(),
        })
    return store.write(
        lambda conn: [conn.execute(insert(segments).values(r).returning(segments.c.id))
                      .scalar_one() for r in rows]
    )


@contextmanager
def open_node(root: Path) -> Iterator[tuple[Store, Layout]]:
    layout = Layout(root)
    layout.create()
    with Store(layout.database) as store:
        yield store, layout
