"""Where a node keeps things on disk.

```
<storage.path>/
  custodes.db                                    the index (SQLite)
  cache/<camera>/                                segments being written by ffmpeg
  recordings/<camera>/<YYYY-MM-DD>/<HH>/<MM.SS>.mp4   completed segments, UTC start time
  quarantine/<camera>/                           files that could not be indexed
  snapshots/<camera>/<YYYY-MM-DD>/               redacted event pictures (JPEG)
  live/<camera>.jpg, <camera>.watch              redacted live picture, and its last request
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SEGMENT = re.compile(r"^(\d{4}-\d{2}-\d{2})/(\d{2})/(\d{2})\.(\d{2})(?:-\d+)?\.mp4$")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "custodes.db"

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def live(self) -> Path:
        return self.root / "live"

    def cache_dir(self, camera: str) -> Path:
        return self.cache / camera

    def create(self) -> None:
        for folder in (self.recordings, self.cache, self.quarantine, self.snapshots,
                       self.live):
            folder.mkdir(parents=True, exist_ok=True)

    def segment_path(self, camera: str, start: float) -> Path:
        """A free path for a segment of ``camera`` starting at ``start`` (UTC epoch seconds)."""
        t = datetime.fromtimestamp(start, UTC)
        folder = self.recordings / camera / t.strftime("%Y-%m-%d") / t.strftime("%H")
        path = folder / t.strftime("%M.%S.mp4")
        n = 1
        # Two segments can start within one second after a restart: never overwrite.
        while path.exists():
            path = folder / t.strftime(f"%M.%S-{n}.mp4")
            n += 1
        return path


def start_from_path(relative: Path) -> float | None:
    """The UTC start second encoded in a recording's path below its camera folder."""
    m = _SEGMENT.match(relative.as_posix())
    if not m:
        return None
    day, hour, minute, second = m.groups()
    t = datetime.strptime(f"{day} {hour}:{minute}:{second}", "%Y-%m-%d %H:%M:%S")
    return t.replace(tzinfo=UTC).timestamp()
