"""Redacted copies of recorded segments, for people who may only see redacted video.

    <storage>/redacted/<camera>/<id>-<digest>.boxes.json   where to blur: the search's result
    <storage>/redacted/<camera>/<id>-<digest>.from-<us>.boxes.json   a tail's search (below)
    <storage>/redacted/<camera>/<id>-<digest>.mp4          the copy a viewer is sent
    <storage>/redacted/<camera>/.<id>-<digest>.mp4.<pid>.<n>.partial   the copy being made
                                                 (or a tail, see below: deleted once read)

A copy is made in one pass (`custodes.redaction.video.redact_stream`): the segment is decoded,
searched for faces and blurred frame by frame, and ffmpeg writes fragmented MP4, a fragment a
frame, to the partial file. A viewer is sent the partial file as it grows (`open`), so the
first picture leaves when its frame is encoded, not when the segment is: a frame waits only
until no later search can change its boxes (`hold`, 0.5 s of video, after it; up to 1.5 s
when a face has just come or gone). When the copy is whole it is renamed to its name and
served from there (with byte ranges) to whoever asks later; a failed one is deleted, and a
viewer who was being sent it gets a truncated answer, never one that looks complete.

The search's boxes are kept beside the copies: a later copy of the segment (a new digest after
a zone change, or after the copy expired) only blurs and encodes, and exports use them for the
segments they join (`custodes.redaction.exports`, via `boxes`). The boxes' digest covers the
redaction settings and the segment's file, so changed settings search again rather than reuse;
a copy's digest covers the boxes' and the camera's privacy zones (zones are drawn at encoding,
they do not change where the faces are).

One maker per segment: every viewer of a copy in the making follows the same partial file.
Viewers' copies are made by as many threads as the machine has cores, one segment each (the
detector runs on one thread: a segment is a core's work). Prefetches (the segments after the
one watched) are made by one more thread, at a lower priority (PREFETCH_NICE, its ffmpeg too),
and only while no viewer waits and fewer viewers' copies than cores are in the making. So a
viewer never waits behind a prefetch nor lands on the low-priority thread (but one who asks for
a copy a prefetch has begun follows it there), and at most cores + 1 copies are made at once,
the one over only when viewers came while a prefetch was running. A copy whose last viewer
went away (a seek elsewhere, a closed tab) before it was whole is given up within a frame: its
thread goes to the next request, and the next viewer of that segment starts it again.

Costs, 2-core box (`custodes.redaction.video`): a 2 s 480x270 15 fps segment (the browser
test's) takes ~0.75 CPU-s, 0.25 of them before its first frame is out; 720p ~34 CPU-ms a
frame, 20 from kept boxes. A viewer who starts TAIL_FROM or more into a segment whose whole
copy is neither made nor under way gets a tail: a copy from the frame showing at that moment
(`frame_before`; decoded from the keyframe before it, the frames between dropped unsearched),
searched from there (`redact_stream`'s `start`) as a file that began there would be, sent as
it is made; the copy is not kept (the whole copy is what later viewers get, and exports use),
its search is (`tail_path`, at most TAILS_KEPT a segment): a later click at or after its start,
by anyone, is a slice of it, from its own frame with the kept boxes of those frames (matched by
the frames' times), blurred and encoded, nothing searched; a click before it is searched (no
boxes there: fail closed). The whole segment's kept boxes serve any click the same way, and
replace the tails' once kept. Tails' searches expire with the copies (`keep`), go with their
segment, and are not seen under other settings (the same digest as the segment's boxes). Its
first frame then waits for the search of `hold` after it, not of everything before it too: a
click 1 s into a 2 s 480x270 segment (the browser test's) 4 searches instead of 9, 7 s into a
10 s 720p one ~0.3 CPU-s instead of ~3.9 (`bench/redaction.py`). A copy is at most
PLAYBACK_LINES lines: a browser's picture, not the original's.

A viewer's pointer resting on the timeline (`hover`, the page asks after 300 ms) starts the copy
a click there would get, from HOVER_LEAD before: one a viewer, each replacing the viewer's last
(taken off the queue, or given up at its next frame if nobody asked for it since), made by the
viewers' threads after every waiting viewer, and given up for one when all threads are busy. A
click that follows lands on it (a tail under way from at most FOLLOW_TAIL before the moment
clicked is followed rather than searched again) or on its kept search.

Where a viewer's wait goes is noted per copy (`timings`, and the log line of each copy made):
when a thread took it, the viewer's request came, its first frame was searched and encoded,
and its first bytes were sent.
Nothing outlives its segment: retention's deletions are followed by a prune of both files.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import select

from custodes.record.playback import Segment
from custodes.redaction.detect import NODE_SETTINGS, RedactionSettings
from custodes.redaction.video import (
    BoxPlan,
    RedactionError,
    Stage,
    frame_before,
    plan_boxes,
    redact_stream,
)
from custodes.store import schema

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)

REDACTED_KEEP: Final = 24 * 3600.0  # seconds a redacted copy is kept after it was made
PLAYBACK_LINES: Final = 720  # copies for viewers are at most this tall
# In a copy's digest: players take copies as fragmented MP4 (Media Source Extensions), so a
# copy made in another layout by older code must not be served.
COPY_FORMAT: Final = "fmp4"
# Prefetches waiting beyond this many per worker are dropped, the oldest first: the viewer's
# own request makes the copy if it is still wanted.
PREFETCH_PER_WORKER: Final = 4
# Priorities: a viewer waiting goes first; then a viewer's pointer resting on the timeline
# (`hover`: made by the viewers' threads, given up for a viewer's request when they are all
# busy); then the segments after the one watched (`prefetch`, on the low-priority thread).
VIEWER, PREFETCH, HOVER = 0, 1, 2
_PRIORITY_NAMES: Final = {VIEWER: "viewer", PREFETCH: "prefetch", HOVER: "hover"}
# A viewer who starts this far (seconds) into a segment whose copy is not made gets a copy from
# the frame at that moment (a tail) instead of waiting for the search of all before it. Nearer
# the start the whole copy, kept for whoever comes next: a tail would save under 3 searches.
TAIL_FROM: Final = 0.5
# A tail's search is kept (its plan: `tail_path`), so that a later click at or after its start
# into that segment is a slice of it (blurred and encoded, not searched). At most this many a
# segment, the oldest dropped; gone with the segment, after `keep`, and when the whole
# segment's boxes are kept (they are then what every copy uses).
TAILS_KEPT: Final = 4
# A click follows a tail under way (a hover's, another viewer's) that starts at most this many
# seconds before it, instead of starting its own search: the frames between are searched
# already or nearly.
FOLLOW_TAIL: Final = 1.5
# A hover's copy starts this many seconds before the moment under the pointer: the click that
# follows may land up to half a pixel before it (a pixel is ~0.45 s at 10 minutes a bar), and
# a click before a kept tail's start searches again. More would search more before the click.
HOVER_LEAD: Final = 0.25
HOVERS_KEPT: Final = 1024  # viewers whose last hover is remembered (to replace it)
PREFETCH_NICE: Final = 10  # added to the niceness of the thread that makes prefetches
FOLLOW_EVERY: Final = 0.02  # seconds between looks at a partial copy for new bytes
CHUNK: Final = 256 * 1024  # bytes read from a copy at a time
STALE_PARTIAL: Final = 3600.0  # seconds: a partial copy not written for this long is debris
TIMINGS_KEPT: Final = 64  # jobs whose timings `RedactedCopies.timings` shows

_FILE_NAME = re.compile(r"^(\d+)-[0-9a-f]{12}(?:\.from-(\d+))?\.(mp4|boxes\.json)$")


class Abandoned(Exception):
    """A copy given up because nobody who asked for it is waiting any more."""


@dataclass(eq=False)
class _Job:
    node: Node
    segment: Segment
    target: Path
    partial: Path  # written while made, renamed to target when whole
    priority: int
    begins: float = 0.0  # seconds into the segment: 0 for the whole copy, else a tail's start
    hover: str | None = None  # made for this viewer's pointer resting on it (`hover`)
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    error: BaseException | None = None
    readers: int = 0  # viewers following it (`open`, `get`)
    left: bool = False  # the last reader went away: give it up at the next frame
    # Where a viewer's wait for the first frame goes: time.monotonic() of each step (`Step`).
    times: dict[str, float] = field(default_factory=lambda: {"asked": time.monotonic()})
    # Where its boxes came from: "searched", "kept" (the whole segment's), "tail" (a kept
    # tail's plan, from `begins` on); "" until it is made.
    boxes: str = ""

    def mark(self, step: str) -> None:
        """Note when `step` first happened (later ones are not its first)."""
        self.times.setdefault(step, time.monotonic())

    def timing(self) -> dict[str, object]:
        """The steps in ms after the job was asked for (see `RedactedCopies.timings`)."""
        asked = self.times["asked"]
        return {"segment": self.segment.id, "begins": self.begins,
                "priority": _PRIORITY_NAMES[self.priority],
                "hover": self.hover is not None, "boxes": self.boxes,
                **{step: round(1000 * (at - asked)) for step, at in self.times.items()
                   if step != "asked"}}


class RedactedCopies:
    """Redacted copies of segments, made once and shared by every viewer who asks.

    Copies go when their segment is gone from the index (retention deleted it) or after
    ``keep`` seconds: a redacted copy must not outlive the footage it was made from. Box files
    go with their segment.
    """

    def __init__(self, keep: float = REDACTED_KEEP,
                 settings: RedactionSettings = NODE_SETTINGS,
                 workers: int | None = None) -> None:
        self.keep = keep
        self.settings = settings
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._jobs: dict[tuple[int, float], _Job] = {}  # by segment id and `begins`
        self._lock = threading.Condition()
        self._viewers: deque[_Job] = deque()
        self._prefetches: deque[_Job] = deque()  # newest first
        self._hovers: deque[_Job] = deque()  # at most one a viewer (`_hovered`)
        self._hovered: dict[str, _Job] = {}  # each viewer's last hover job
        self._partials = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._running = 0  # viewers' copies being made
        self._stopping = False
        # The last jobs' steps (`_Job.timing`), for finding where a viewer's wait goes.
        self._timed: deque[_Job] = deque(maxlen=TIMINGS_KEPT)

    def timings(self) -> list[dict[str, object]]:
        """The steps of the last TIMINGS_KEPT copies made or given up, oldest first, in ms
        after each was asked for: started (a thread took it), followed (a viewer's request for
        its bytes came), searched (its first frame
        decoded and searched), encoding (its first frame given to ffmpeg), sent (its first
        bytes read for a viewer), done (whole, failed or given up)."""
        with self._lock:
            return [job.timing() for job in self._timed]

    def folder(self, node: Node, camera: str) -> Path:
        return node.layout.root / "redacted" / camera

    def boxes_path(self, node: Node, segment: Segment) -> Path:
        # The segment's path and start too: SQLite may reuse the id of a deleted last row.
        what = json.dumps([self.settings.digest(), segment.path, segment.start])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return self.folder(node, segment.camera) / f"{segment.id}-{digest}.boxes.json"

    def tail_path(self, node: Node, segment: Segment, origin: float) -> Path:
        """Where the plan of a tail from ``origin`` seconds into ``segment`` is kept: beside
        the segment's box file, under the same digest (settings, file)."""
        boxes = self.boxes_path(node, segment)
        stem = boxes.name.removesuffix(".boxes.json")
        return boxes.with_name(f"{stem}.from-{round(origin * 1e6)}.boxes.json")

    def tail_plans(self, node: Node, segment: Segment) -> list[tuple[float, Path]]:
        """The kept tails' plans of ``segment`` under these settings: (start, path), by
        start."""
        boxes = self.boxes_path(node, segment)
        stem = boxes.name.removesuffix(".boxes.json")
        found = []
        for path in boxes.parent.glob(f"{stem}.from-*.boxes.json"):
            m = _FILE_NAME.match(path.name)
            if m and m.group(2):
                found.append((int(m.group(2)) / 1e6, path))
        return sorted(found)

    def _kept(self, node: Node, segment: Segment, begins: float
              ) -> tuple[BoxPlan, float, Path] | None:
        """Kept boxes for a copy from ``begins``: the whole segment's, else those of the kept
        tail that starts nearest at or before it (a click before every kept tail's start has
        none: it is searched). The plan, where its first frame is, and its file."""
        whole = self.boxes_path(node, segment)
        plan = BoxPlan.load(whole, self.settings)
        if plan is not None:
            return plan, 0.0, whole
        if begins <= 0:
            return None
        for origin, path in reversed(self.tail_plans(node, segment)):
            if origin <= begins + 1e-6:
                plan = BoxPlan.load(path, self.settings)
                if plan is not None:
                    return plan, origin, path
        return None

    def _covered(self, node: Node, segment: Segment, begins: float) -> bool:
        """Whether kept boxes serve a copy from ``begins`` (`_kept`, without reading them)."""
        return self.boxes_path(node, segment).is_file() or (begins > 0 and any(
            origin <= begins + 1e-6 for origin, _ in self.tail_plans(node, segment)))

    def _keep_tail(self, node: Node, segment: Segment, origin: float, plan: BoxPlan) -> None:
        """Keep a tail's search; at most TAILS_KEPT a segment, the oldest written dropped."""
        plan.save(self.tail_path(node, segment, origin))
        kept = [path for _, path in self.tail_plans(node, segment)]
        kept.sort(key=_mtime)
        for path in kept[:max(0, len(kept) - TAILS_KEPT)]:
            path.unlink(missing_ok=True)

    def _drop_tails(self, node: Node, segment: Segment) -> None:
        """The whole segment's boxes are kept: every copy uses those, not a tail's."""
        for _, path in self.tail_plans(node, segment):
            path.unlink(missing_ok=True)

    def path(self, node: Node, segment: Segment) -> Path:
        zones = node.config.cameras[segment.camera].privacy_zones
        what = json.dumps([self.boxes_path(node, segment).name, zones, PLAYBACK_LINES,
                           COPY_FORMAT])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return self.folder(node, segment.camera) / f"{segment.id}-{digest}.mp4"

    def boxes(self, node: Node, segment: Segment) -> BoxPlan:
        """Where to blur in ``segment``: from its box file, or searched now and saved."""
        path = self.boxes_path(node, segment)
        plan = BoxPlan.load(path, self.settings)
        if plan is not None:
            log.debug("segment %d: boxes reused", segment.id)
            return plan
        started = time.monotonic()
        plan = plan_boxes(self._source(node, segment), self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        plan.save(path)
        self._drop_tails(node, segment)
        log.info("segment %d (%s): %d frames searched for faces in %.1f s", segment.id,
                 segment.camera, plan.frames, time.monotonic() - started)
        return plan

    def get(self, node: Node, segment: Segment) -> Path:
        """The redacted copy of ``segment``, made now if needed (one maker per segment),
        once it is whole."""
        target = self.path(node, segment)
        if target.is_file():
            return target
        job = self._attach(node, segment, target, 0.0)
        try:
            job.done.wait()
        finally:
            self._detach(job)
        if job.error is not None:
            raise job.error
        return target

    def open(self, node: Node, segment: Segment, at: float = 0.0
             ) -> tuple[Path | AsyncIterator[bytes], float]:
        """The copy of ``segment`` for a viewer starting ``at`` seconds into it, and where the
        copy begins (seconds into the segment; its first frame is at time 0).

        The whole copy's path when it is made; else bytes as they are made (started at a
        viewer's priority if nobody has): of the whole copy, or of a tail from the frame
        showing at ``at`` when that is TAIL_FROM or more in and the whole copy is not under
        way.
        The bytes end with the copy; an error (RedactionError, FileNotFoundError) is raised
        in their place, also after some were given: they are then not the whole copy.
        Raises FileNotFoundError at once when the segment's file is missing."""
        target = self.path(node, segment)
        if target.is_file():
            return target, 0.0
        begins = self._begins(node, segment, self._source(node, segment), at)
        return self._follow(node, segment, target, begins), begins

    def start(self, node: Node, segment: Segment, at: float = 0.0) -> float:
        """A viewer is about to ask for ``segment`` from ``at``: start its copy now, as the
        viewer would. Returns where the copy begins (see `open`), to ask `open` for."""
        target = self.path(node, segment)
        if target.is_file():
            return 0.0
        try:
            begins = self._begins(node, segment, self._source(node, segment), at)
        except FileNotFoundError:
            return 0.0  # the viewer's own request says so
        self._submit(node, segment, target, VIEWER, begins)
        return begins

    def _begins(self, node: Node, segment: Segment, source: Path, at: float) -> float:
        if at < TAIL_FROM:
            return 0.0
        with self._lock:
            whole = self._jobs.get((segment.id, 0.0))
            if whole is not None and whole.started:
                return 0.0  # under way: following it is quicker than starting anew
        try:
            begins = frame_before(source, at)
        except RedactionError:
            return 0.0  # the whole copy's maker says what is wrong with the file
        if self._covered(node, segment, begins):
            return begins  # a slice of kept boxes: nothing to search
        with self._lock:
            # A tail under way from a little before (a hover's, another viewer's click): the
            # frames between are searched already, or nearly.
            under_way = [key[1] for key, job in self._jobs.items()
                         if key[0] == segment.id and not job.left
                         and begins - FOLLOW_TAIL <= key[1] <= begins + 1e-6 and key[1] > 0]
        return max(under_way, default=begins)

    def prefetch(self, node: Node, segment: Segment) -> None:
        """Make the copy in the background, so it is ready when playback reaches it."""
        target = self.path(node, segment)
        if not target.is_file():
            self._submit(node, segment, target, PREFETCH)

    def hover(self, node: Node, segment: Segment, at: float, viewer: str) -> float | None:
        """``viewer``'s pointer rests on the timeline ``at`` seconds into ``segment``: make
        the copy a click there would get (from HOVER_LEAD before), below any viewer's request
        (HOVER). One a viewer: this replaces the viewer's last hover, given up if nobody has
        asked for it since. Returns where the copy begins; None when nothing was to be made
        (the copy or kept boxes for it are there, or it is under way). Raises
        FileNotFoundError when the segment's file is missing."""
        target = self.path(node, segment)
        source = self._source(node, segment)
        lead = at - HOVER_LEAD
        try:
            begins = frame_before(source, lead) if lead >= TAIL_FROM else 0.0
        except RedactionError:
            begins = 0.0
        with self._lock:
            last = self._hovered.pop(viewer, None)
            under_way = self._jobs.get((segment.id, begins))
            if last is not None and last is not under_way:
                self._cancel(last, "the viewer's pointer moved on")
            if (under_way is not None and under_way.left and not under_way.readers
                    and under_way.priority == HOVER):
                # Given up, not yet stopped (still in _jobs under the lock): wanted again.
                under_way.left = False
                under_way.hover = viewer
                self._hovered[viewer] = under_way
                return begins
            if (target.is_file() or under_way is not None
                    or self._covered(node, segment, begins)):
                return None
            job = self._submit(node, segment, target, HOVER, begins, hover=viewer)
            self._hovered[viewer] = job
            if len(self._hovered) > HOVERS_KEPT:
                for who in [w for w, j in self._hovered.items() if j.done.is_set()]:
                    del self._hovered[who]
            return begins

    def _cancel(self, job: _Job, why: str) -> None:
        """Give up a hover's job nobody asked for: taken off the queue, or stopped at its next
        frame. Under the lock."""
        if job.done.is_set() or job.readers or job.priority != HOVER:
            return
        if job.started:
            job.left = True
            return
        self._hovers.remove(job)
        if self._jobs.get((job.segment.id, job.begins)) is job:
            del self._jobs[(job.segment.id, job.begins)]
        job.error = Abandoned(why)
        job.mark("done")
        self._timed.append(job)
        job.done.set()

    async def _follow(self, node: Node, segment: Segment, target: Path, begins: float
                      ) -> AsyncIterator[bytes]:
        job = self._attach(node, segment, target, begins)
        try:
            async for chunk in self._tail(job):
                yield chunk
        finally:
            self._detach(job)

    async def _tail(self, job: _Job) -> AsyncIterator[bytes]:
        """The job's file as it grows, until the job is done; its error if it fails."""
        with await self._open_partial(job) as copy:
            while True:
                finished = job.done.is_set()  # before reading: the last bytes are then in
                chunk = copy.read(CHUNK)
                if chunk:
                    job.mark("sent")
                    yield chunk
                elif finished:
                    if job.error is not None:
                        raise job.error
                    return
                else:
                    await asyncio.sleep(FOLLOW_EVERY)

    async def _open_partial(self, job: _Job) -> BufferedReader:
        while True:
            finished = job.done.is_set()
            try:
                return job.partial.open("rb")
            except FileNotFoundError:
                pass
            if finished:  # renamed (or deleted) before we looked
                if job.error is not None:
                    raise job.error
                if job.begins:  # a tail is never renamed: deleted, so not for this reader
                    raise FileNotFoundError(job.partial)
                return job.target.open("rb")
            await asyncio.sleep(FOLLOW_EVERY)

    def _attach(self, node: Node, segment: Segment, target: Path, begins: float) -> _Job:
        with self._lock:
            job = self._submit(node, segment, target, VIEWER, begins)
            job.readers += 1
            job.mark("followed")
            return job

    def _detach(self, job: _Job) -> None:
        with self._lock:
            job.readers -= 1
            if job.readers == 0 and not job.done.is_set():
                job.left = True
            self._drop_tail(job)

    def _drop_tail(self, job: _Job) -> None:
        """A tail's file, read by whoever had it open, goes when it is done and unread (it
        is never kept: the next viewer may start elsewhere). Under the lock."""
        if job.begins and job.readers == 0 and job.done.is_set():
            job.partial.unlink(missing_ok=True)

    def _submit(self, node: Node, segment: Segment, target: Path, priority: int,
                begins: float = 0.0, *, hover: str | None = None) -> _Job:
        with self._lock:
            if self._stopping:  # nothing would make it: said at once rather than never
                refused = _Job(node, segment, target, target, priority, begins,
                               error=Abandoned("the node is stopping"))
                refused.done.set()
                return refused
            key = (segment.id, begins)
            job = self._jobs.get(key)
            if job is None or job.target != target:
                partial = target.with_name(
                    f".{target.name}.{os.getpid()}.{next(self._partials)}.partial")
                job = self._jobs[key] = _Job(node, segment, target, partial, priority,
                                             begins, hover=hover)
                if priority == VIEWER:
                    self._viewers.append(job)
                    self._make_room()
                elif priority == HOVER:
                    self._hovers.append(job)
                else:
                    self._prefetches.appendleft(job)
                    if len(self._prefetches) > PREFETCH_PER_WORKER * self.workers:
                        dropped = self._prefetches.pop()
                        del self._jobs[(dropped.segment.id, dropped.begins)]
                        dropped.error = Abandoned("dropped from the prefetch queue")
                        dropped.done.set()
            elif priority == VIEWER and job.priority != VIEWER and not job.started:
                (self._prefetches if job.priority == PREFETCH else self._hovers).remove(job)
                job.priority = VIEWER
                self._viewers.append(job)
                self._make_room()
            elif priority == VIEWER and job.priority == HOVER:
                job.priority = VIEWER  # asked for now: no longer to be given up for another
            if not self._threads:
                for n in range(self.workers):
                    self._thread(f"redact-{n + 1}", prefetch=False)
                self._thread("redact-prefetch", prefetch=True)
            self._lock.notify_all()
        return job

    def _make_room(self) -> None:
        """A viewer's request waits and every viewers' thread is busy: a hover's job that
        nobody has asked for yet gives way at its next frame. Under the lock."""
        if self._running < self.workers:
            return
        for job in self._jobs.values():
            if (job.started and job.priority == HOVER and not job.readers
                    and not job.left and not job.done.is_set()):
                job.left = True
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Give up every copy in the making or waiting and end the threads. A thread left in
        the detector's native code when the process exits aborts it (the runtime's threads
        are torn down under it: "terminate called without an active exception")."""
        with self._lock:
            self._stopping = True
            for job in [*self._viewers, *self._prefetches, *self._hovers]:
                job.error = Abandoned("the node is stopping")
                job.done.set()
            self._viewers.clear()
            self._prefetches.clear()
            self._hovers.clear()
            self._lock.notify_all()
            threads = list(self._threads)
        ends = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, ends - time.monotonic()))
            if thread.is_alive():
                log.warning("%s: a redacted copy did not stop within %.0f s", thread.name,
                            timeout)

    def _thread(self, name: str, *, prefetch: bool) -> None:
        thread = threading.Thread(target=self._run, args=(prefetch,), daemon=True, name=name)
        self._threads.append(thread)
        thread.start()

    def _next(self, prefetch: bool) -> _Job | None:
        """The next job for this thread; None when the copies are stopping."""
        with self._lock:
            while True:
                if self._stopping:
                    return None
                if not prefetch and self._viewers:
                    job = self._viewers.popleft()
                    self._running += 1
                elif not prefetch and self._hovers:  # a free viewers' thread: none waits
                    job = self._hovers.popleft()
                    self._running += 1
                elif (prefetch and self._prefetches and not self._viewers
                      and self._running < self.workers):
                    job = self._prefetches.popleft()
                else:
                    self._lock.wait()
                    continue
                job.started = True
                job.mark("started")
                return job

    def _run(self, prefetch: bool) -> None:
        if prefetch:
            _lower_priority(PREFETCH_NICE)
        while True:
            job = self._next(prefetch)
            if job is None:
                return
            try:
                self._make(job)
            except BaseException as exc:
                job.error = exc
                if isinstance(exc, Abandoned):
                    log.info("redacted copy of segment %d given up: %s", job.segment.id, exc)
                elif not isinstance(exc, FileNotFoundError):
                    log.exception("could not make the redacted copy of segment %d",
                                  job.segment.id)
            finally:
                with self._lock:
                    if self._jobs.get((job.segment.id, job.begins)) is job:
                        del self._jobs[(job.segment.id, job.begins)]
                    if not prefetch:
                        self._running -= 1
                    job.mark("done")
                    self._timed.append(job)
                    job.done.set()
                    self._drop_tail(job)
                    self._lock.notify_all()  # the prefetch thread may go on

    def _check(self, job: _Job) -> None:
        with self._lock:
            if self._stopping:
                raise Abandoned(f"segment {job.segment.id}: the node is stopping")
            if job.left and job.readers == 0:
                # Out of _jobs before anyone else can attach: whoever asks next starts anew.
                if self._jobs.get((job.segment.id, job.begins)) is job:
                    del self._jobs[(job.segment.id, job.begins)]
                raise Abandoned(f"segment {job.segment.id}: nobody is waiting for the copy")

    def _source(self, node: Node, segment: Segment) -> Path:
        base = node.layout.recordings.resolve()
        source = (base / segment.path).resolve()
        if not source.is_relative_to(base) or not source.is_file():
            raise FileNotFoundError(source)
        return source

    def _make(self, job: _Job) -> None:
        node, segment, target = job.node, job.segment, job.target
        tail = job.begins > 0
        if target.is_file() and not tail:  # made while this job waited in the queue
            return
        started = time.monotonic()
        source = self._source(node, segment)
        boxes_path = self.boxes_path(node, segment)
        # A tail is a slice of kept boxes when some cover its frames (the whole segment's, or
        # a kept tail's from at or before it), else searched afresh from its first frame as a
        # file that began there would be.
        found = self._kept(node, segment, job.begins)
        kept, origin, kept_path = found if found is not None else (None, 0.0, None)
        job.boxes = ("searched" if kept_path is None
                     else "kept" if kept_path == boxes_path else "tail")

        def progress(stage: Stage, _done: int, _total: int) -> None:
            job.mark("searched" if stage == "search" else "encoding")
            self._check(job)

        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with job.partial.open("wb") as out:
                plan = redact_stream(source, out, settings=self.settings, plan=kept,
                                     origin=origin,
                                     zones=node.config.cameras[segment.camera].privacy_zones,
                                     max_lines=PLAYBACK_LINES, progress=progress,
                                     start=job.begins)
            if kept is None and not tail:
                plan.save(boxes_path)
                self._drop_tails(node, segment)
            elif kept is None:
                self._keep_tail(node, segment, job.begins, plan)
            if not tail:
                os.replace(job.partial, target)
        except BaseException as exc:
            job.partial.unlink(missing_ok=True)
            if isinstance(exc, RedactionError) and kept_path is not None:
                # Kept boxes that do not fit the file (it changed): searched again next time.
                log.warning("segment %d: dropping kept boxes %s: %s", segment.id,
                            kept_path.name, exc)
                kept_path.unlink(missing_ok=True)
            raise
        steps = job.timing()
        log.info("redacted copy of segment %d (%s, %.1f s of video%s) made in %.1f s%s; "
                 "first frame (ms after asked): %s", segment.id, segment.camera,
                 segment.duration, f", from {job.begins:.1f} s" if tail else "",
                 time.monotonic() - started,
                 {"kept": " (boxes reused)", "tail": f" (a kept tail's boxes, from "
                  f"{origin:.1f} s)"}.get(job.boxes, ""),
                 ", ".join(f"{step} {steps[step]}" for step in
                           ("started", "searched", "encoding", "sent") if step in steps))
        self.prune(node)

    def prune(self, node: Node) -> int:
        """Delete copies and box files whose segment is gone, copies older than ``keep``, and
        partial copies left by a process that stopped while making them."""
        root = node.layout.root / "redacted"
        if not root.is_dir():
            return 0
        now = time.time()
        removed = 0
        files: dict[int, list[Path]] = {}
        for path in root.glob("*/*"):
            m = _FILE_NAME.match(path.name)
            if m:
                files.setdefault(int(m.group(1)), []).append(path)
            elif path.name.endswith(".partial"):
                try:
                    if now - path.stat().st_mtime > STALE_PARTIAL:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        if not files:
            return removed
        with node.store.read() as conn:
            alive = set(conn.execute(
                select(schema.segments.c.id).where(schema.segments.c.id.in_(sorted(files)))
            ).scalars())
        for segment_id, paths in files.items():
            for path in paths:
                try:
                    # Copies and tails' plans expire; the whole segment's boxes stay with it.
                    passing = path.suffix == ".mp4" or ".from-" in path.name
                    expired = passing and now - path.stat().st_mtime > self.keep
                    if segment_id not in alive or expired:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


def _lower_priority(nice: int) -> None:
    """Make the calling thread (and the processes it starts) yield the CPU to others: on
    Linux niceness is per thread."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed
        log.debug("prefetch priority unchanged: %s", exc)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
