"""Where a node keeps things on disk.

```
<storage.path>/
  custodes.db                                    the index (SQLite)
  cache/<camera>/                                segments being written by ffmpeg
  recordings/<camera>/<YYYY-MM-DD>/<HH>/<MM.SS>.mp4   completed segments, UTC start time
  quarantine/<camera>/                           files that could not be indexed
  snapshots/<camera>/<YYYY-MM-DD>/               redacted event pictures (JPEG)
  live/<camera>.jpg, .watch, .state             redacted live picture, its last request, its state
  exports/<id>/                                  signed exports
```

Nothing in it is for other accounts on the machine: footage, pictures and exports show people,
and the database holds password hashes and sealed biometric data. A node (and the command line)
run under DATA_UMASK, so that what they and the ffmpeg processes they start write is 0640 and
0750, and at start restrict_modes() takes away what older versions (or a copy) left open.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# Nothing for "other", no writing for the group: files 0640, folders 0750. The group may read
# (a backup account); the database is tightened to 0600 on top (restrict_modes).
DATA_UMASK: Final = 0o027
DATABASE_MODE: Final = 0o600

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

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def create(self) -> None:
        self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
        for folder in (self.recordings, self.cache, self.quarantine, self.snapshots,
                       self.live):
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)

    def restrict_modes(self) -> int:
        """Take group write and every "other" bit off everything under the root (the database
        to 0600); return how many modes changed. Links are left alone, not followed."""
        changed = 0
        for folder, dirs, files in os.walk(self.root):
            for name in (".", *dirs, *files):
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # a segment deleted while we walk
                    continue
                if stat.S_ISLNK(st.st_mode) or (name == "." and folder != str(self.root)):
                    continue  # "." of a subfolder was seen as its parent's entry
                mode = stat.S_IMODE(st.st_mode)
                wanted = mode & ~DATA_UMASK
                if stat.S_ISREG(st.st_mode) and name.startswith(self.database.name):
                    wanted = mode & DATABASE_MODE  # custodes.db, -wal, -shm, backups
                if wanted != mode:
                    os.chmod(path, wanted)
                    changed += 1
        if changed:
            log.info("restricted the modes of %d files and folders under %s", changed,
                     self.root)
        return changed

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
