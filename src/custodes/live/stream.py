"""Live video by stream copy: the camera's own H.264, remuxed (never re-encoded) into
fragmented MP4 for the browser's Media Source Extensions, for roles allowed to see originals.

    camera (RTSP) -> one ffmpeg per camera and stream (-c copy -f mp4, a fragment per frame)
                  -> Upstream: splits the MP4 into its init segment and fragments (moof+mdat),
                     keeps the fragments since the last keyframe
                  -> fan-out to each Viewer's bounded queue -> the WebSocket route

One upstream per (camera, stream) whoever watches: a tenth viewer costs a queue, not a camera
connection. An upstream starts with its first viewer and stops LINGER seconds after its last
(a viewer switching layouts reuses it). A viewer who falls behind (a full queue) loses what it
had queued and takes up again at the next keyframe: it never holds up the upstream or the
others. A new viewer gets the init segment and the fragments since the last keyframe, so its
picture starts at once rather than at the next keyframe.

A fragment per frame (not per keyframe interval): with `frag_keyframe` alone a fragment is
only complete at the next keyframe, which would add a whole GOP (1-4 s) of delay.

Costs: ffmpeg stream copy is ~0.6 % of a core per 4 Mbit/s stream (ARCHITECTURE.md); the
fan-out is a few hundred bytes of Python per fragment and viewer. The caps (MAX_UPSTREAMS,
MAX_VIEWERS) bound connections to the cameras and memory, not CPU.

Each fragment's capture time is estimated on the server (``Upstream.anchor``): the stream's
timeline (the fragments' decode times) is tied to the wall clock by the fragment that arrived
earliest relative to it within the last ANCHOR_WINDOW seconds, i.e. the least delayed one
(a window, so that a camera clock slower than ours does not leave a stale tie). The browser
subtracts that from its clock to show how old the frame on screen is (see
web/static/live_stream.js). It leaves out the camera's own encoding delay, which no stream
copy can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Final

from custodes.auth.roles import Actor, Permission
from custodes.media import ffmpeg_exe
from custodes.process import backoff, die_with_parent

if TYPE_CHECKING:
    from custodes.config import Config

log = logging.getLogger(__name__)

LINGER: Final = 5.0  # seconds an upstream stays open after its last viewer left
MAX_UPSTREAMS: Final = 16  # camera streams copied at once (each a camera connection)
MAX_VIEWERS: Final = 64  # viewers at once, over all streams
QUEUE_BYTES: Final = 8 * 1024 * 1024  # a viewer's queue: past this it drops to a keyframe
QUEUE_ITEMS: Final = 256  # ... or past this many messages (~10 s of a 25 fps stream)
GOP_BYTES: Final = 16 * 1024 * 1024  # the fragments kept for new viewers, at most
STALL: Final = 10.0  # seconds without a fragment before a stream counts as down
ANCHOR_WINDOW: Final = 30.0  # seconds over which the least delayed fragment is looked for
_NON_SYNC: Final = 0x00010000  # ISO 14496-12 sample flags: sample_is_non_sync_sample


class StreamKind(StrEnum):
    """Which of a camera's streams: the grid shows the sub stream, a single tile the main."""

    SUB = "sub"
    MAIN = "main"


class StreamState(StrEnum):
    """What an upstream is doing (the same words as the redacted pictures' states)."""

    STARTING = "starting"
    LIVE = "live"
    DOWN = "down"


def originals_allowed(actor: Actor) -> bool:
    """Whether ``actor`` may see a camera's original (unredacted) live video.

    The same rule as original playback (api/routes/video.py): the role must hold
    playback.unredacted. No profile allows more to a role than its permissions; a role
    without it (a viewer, an administrator) gets redacted pictures only.
    """
    return actor.can(Permission.PLAYBACK_UNREDACTED)


# -- fragmented MP4, as far as the fan-out needs it ------------------------------------------

class Mp4Error(ValueError):
    """ffmpeg's output is not the fragmented MP4 expected."""


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """The boxes in ``data[start:end]``: (type, payload start, box end)."""
    end = len(data) if end is None else end
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        if size < header or pos + size > end:
            raise Mp4Error(f"a {kind!r} box of {size} bytes does not fit")
        out.append((kind, pos + header, pos + size))
        pos += size
    return out


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def _path(data: bytes, kinds: list[bytes], start: int = 0, end: int | None = None
          ) -> tuple[int, int] | None:
    span: tuple[int, int] | None = (start, len(data) if end is None else end)
    for kind in kinds:
        if span is None:
            return None
        span = _child(data, span[0], span[1], kind)
    return span


@dataclass(frozen=True)
class InitInfo:
    """What a browser must know before it can take a stream: its MSE type and picture."""

    codec: str  # RFC 6381, e.g. avc1.64001f
    width: int
    height: int
    timescale: int

    @property
    def mime(self) -> str:
        return f'video/mp4; codecs="{self.codec}"'


def parse_init(moov: bytes) -> InitInfo:
    """The codec string, picture size and timescale of the first track of a ``moov`` box."""
    trak = _path(moov, [b"moov", b"trak"])
    if trak is None:
        raise Mp4Error("no track in the init segment")
    mdhd = _path(moov, [b"mdia", b"mdhd"], *trak)
    stsd = _path(moov, [b"mdia", b"minf", b"stbl", b"stsd"], *trak)
    if mdhd is None or stsd is None:
        raise Mp4Error("the track has no mdhd or stsd")
    version = moov[mdhd[0]]
    timescale = struct.unpack_from(">I", moov, mdhd[0] + (20 if version == 1 else 12))[0]
    # stsd: version/flags, entry count, then sample entries (a visual one: 78 bytes, then
    # its boxes).
    [(kind, entry, entry_end)] = boxes(moov, stsd[0] + 8, stsd[1])[:1]
    width, height = struct.unpack_from(">HH", moov, entry + 24)
    tag = kind.decode("ascii", "replace")
    if kind in (b"avc1", b"avc3"):
        avcc = _child(moov, entry + 78, entry_end, b"avcC")
        if avcc is None:
            raise Mp4Error("an H.264 track without avcC")
        profile, compat, level = moov[avcc[0] + 1:avcc[0] + 4]
        codec = f"{tag}.{profile:02x}{compat:02x}{level:02x}"
    elif kind in (b"hvc1", b"hev1"):
        hvcc = _child(moov, entry + 78, entry_end, b"hvcC")
        if hvcc is None:
            raise Mp4Error("an H.265 track without hvcC")
        codec = f"{tag}.{_hevc_codec(moov[hvcc[0]:hvcc[1]])}"
    else:
        codec = tag
    return InitInfo(codec, width, height, timescale)


def _hevc_codec(hvcc: bytes) -> str:
    """The part of an H.265 codec string after "hvc1." (ISO 14496-15 annex E), from hvcC."""
    space, tier, profile = hvcc[1] >> 6, (hvcc[1] >> 5) & 1, hvcc[1] & 0x1F
    compat = int.from_bytes(hvcc[2:6], "big")
    reverse = int(f"{compat:032b}"[::-1], 2)  # written in reverse bit order
    constraints = bytearray(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"{'' if space == 0 else 'ABC'[space - 1]}{profile}", f"{reverse:X}",
             f"{'H' if tier else 'L'}{hvcc[12]}", *(f"{b:X}" for b in constraints)]
    return ".".join(parts)


@dataclass(frozen=True)
class Fragment:
    """One moof+mdat pair: the bytes a viewer gets, and what the fan-out needs to know."""

    data: bytes
    decode_time: int  # tfdt, in the track's timescale
    keyframe: bool  # its first sample is a sync sample: a viewer may start here


def parse_fragment(moof_mdat: bytes) -> tuple[int, bool]:
    """The base decode time and whether the first sample is a keyframe, of a moof+mdat."""
    traf = _path(moof_mdat, [b"moof", b"traf"])
    if traf is None:
        raise Mp4Error("a fragment without traf")
    tfhd = _child(moof_mdat, traf[0], traf[1], b"tfhd")
    tfdt = _child(moof_mdat, traf[0], traf[1], b"tfdt")
    trun = _child(moof_mdat, traf[0], traf[1], b"trun")
    if tfhd is None or tfdt is None or trun is None:
        raise Mp4Error("a fragment without tfhd, tfdt or trun")
    version = moof_mdat[tfdt[0]]
    decode = struct.unpack_from(">Q" if version == 1 else ">I", moof_mdat, tfdt[0] + 4)[0]
    # tfhd: flags, track id, then optional fields in this order (ISO 14496-12 8.8.7).
    flags = int.from_bytes(moof_mdat[tfhd[0] + 1:tfhd[0] + 4], "big")
    pos = tfhd[0] + 8
    default_flags = 0
    for bit, size in ((0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4)):
        if flags & bit:
            pos += size
    if flags & 0x20:
        default_flags = struct.unpack_from(">I", moof_mdat, pos)[0]
    # trun: flags, sample count, [data offset], [first sample flags], samples.
    tflags = int.from_bytes(moof_mdat[trun[0] + 1:trun[0] + 4], "big")
    pos = trun[0] + 8 + (4 if tflags & 0x1 else 0)
    if tflags & 0x4:
        first = struct.unpack_from(">I", moof_mdat, pos)[0]
    else:
        sample = pos
        sample += 4 if tflags & 0x100 else 0  # duration
        sample += 4 if tflags & 0x200 else 0  # size
        first = (struct.unpack_from(">I", moof_mdat, sample)[0] if tflags & 0x400
                 else default_flags)
    return decode, not first & _NON_SYNC


def read_box(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next whole box (type, bytes including its header) from ``stream``; None at EOF."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size, kind = struct.unpack(">I4s", header)
    if size == 1:
        more = stream.read(8)
        if len(more) < 8:
            return None
        size = struct.unpack(">Q", more)[0]
        header += more
    if size < len(header) or size > 256 * 1024 * 1024:
        raise Mp4Error(f"a {kind!r} box of {size} bytes")
    body = stream.read(size - len(header))
    if len(body) < size - len(header):
        return None
    return kind, header + body


def remux_argv(url: str) -> list[str]:
    """ffmpeg: RTSP over TCP in, the first video stream copied out as fragmented MP4 on
    stdout, one fragment per frame, flushed at once."""
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-rtsp_transport", "tcp", "-timeout", "10000000",
        # The SDP's parameter sets give the codec parameters: no waiting to probe frames.
        "-fflags", "nobuffer", "-analyzeduration", "0", "-probesize", "32768",
        "-i", url,
        "-map", "0:v:0", "-c", "copy", "-an", "-dn", "-sn",
        "-f", "mp4", "-movflags", "frag_every_frame+empty_moov+default_base_moof",
        "-flush_packets", "1", "pipe:1",
    ]


# -- viewers -----------------------------------------------------------------------------------

@dataclass
class Message:
    """What goes to a viewer: bytes (init segment, fragment) or a JSON-able dict."""

    data: bytes | dict[str, object]
    size: int = 0
    final: bool = False  # the upstream is gone: the viewer's connection ends after this


class Viewer:
    """One WebSocket's queue. Filled by the upstream's thread, emptied by the route's task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Message] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self.waiting_for_keyframe = True  # until it has an init segment and a keyframe
        self.dropped = 0  # times it fell behind and skipped to a keyframe
        self.closed = False

    def put(self, message: Message, *, fragment: Fragment | None = None) -> None:
        """Queue ``message`` (called from the upstream's thread); never blocks."""
        with self._lock:
            if fragment is not None:
                if self.waiting_for_keyframe and not fragment.keyframe:
                    return
                if (self._bytes + message.size > QUEUE_BYTES
                        or len(self._queue) >= QUEUE_ITEMS):
                    # Behind: what it has queued is stale; the next keyframe starts it again.
                    self._queue = deque(m for m in self._queue if isinstance(m.data, dict))
                    self._bytes = 0
                    self.waiting_for_keyframe = True
                    self.dropped += 1
                    return
                self.waiting_for_keyframe = False
            self._queue.append(message)
            self._bytes += message.size
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the web server's loop is gone: so is this viewer
            self.closed = True

    async def get(self) -> Message:
        while True:
            with self._lock:
                if self._queue:
                    message = self._queue.popleft()
                    self._bytes -= message.size
                    return message
                self._wake.clear()
            await self._wake.wait()


# -- upstreams ---------------------------------------------------------------------------------

@dataclass
class _Gop:
    init: bytes | None = None
    info: InitInfo | None = None
    fragments: list[Fragment] = field(default_factory=list)
    size: int = 0


class Upstream:
    """One camera stream copied by one ffmpeg, fanned out to its viewers, restarted with a
    backoff when it fails, until ``close``."""

    def __init__(self, camera: str, kind: StreamKind, url: str) -> None:
        self.camera = camera
        self.kind = kind
        self.url = url
        self.viewers: set[Viewer] = set()
        self.state = StreamState.STARTING
        self.detail = "connecting to the camera"
        self.anchor: float | None = None  # wall time of decode time 0 (see the module doc)
        # (arrival, arrival - decode time) of the fragments that may yet be the least delayed
        # one in the window, increasing in both: a sliding-window minimum.
        self._ties: deque[tuple[float, float]] = deque()
        self.idle_since: float | None = None  # monotonic; set when the last viewer left
        self.started = 0  # ffmpeg runs started
        self.fragments = 0
        self._gop = _Gop()
        self._init_prefix = b""  # the ftyp box, which comes before the moov
        self._retargeted = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream-{camera}-{kind}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        for viewer in list(self.viewers):
            viewer.put(Message({"type": "state", "state": StreamState.DOWN,
                                "detail": "live video stopped"}, final=True))

    def retarget(self, url: str) -> None:
        """The camera's address changed (cameras edited while running): reconnect to ``url``."""
        self.url = url
        self._retargeted = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def add(self, viewer: Viewer) -> None:
        """Give ``viewer`` the state, the init segment and the fragments since the keyframe."""
        with self._lock:
            self.viewers.add(viewer)
            self.idle_since = None
            viewer.put(self._state_message())
            self._send_init(viewer)
            for fragment in self._gop.fragments:
                viewer.put(Message(fragment.data, len(fragment.data)), fragment=fragment)

    def remove(self, viewer: Viewer) -> None:
        with self._lock:
            self.viewers.discard(viewer)
            if not self.viewers:
                self.idle_since = time.monotonic()

    def _state_message(self) -> Message:
        return Message({"type": "state", "state": self.state, "detail": self.detail,
                        "stream": self.kind})

    def _send_init(self, viewer: Viewer) -> None:
        gop = self._gop
        if gop.init is None or gop.info is None:
            return
        viewer.waiting_for_keyframe = True
        viewer.put(Message({"type": "init", "mime": gop.info.mime, "width": gop.info.width,
                            "height": gop.info.height, "anchor": self.anchor,
                            "timescale": gop.info.timescale}))
        viewer.put(Message(gop.init, len(gop.init)))

    def _set_state(self, state: StreamState, detail: str) -> None:
        with self._lock:
            if (state, detail) == (self.state, self.detail):
                return
            self.state, self.detail = state, detail
            message = self._state_message()
            for viewer in self.viewers:
                viewer.put(message)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self.started += 1
            error = self._copy()
            if self._stop.is_set():
                return
            if self._retargeted:
                self._retargeted = False
                self._set_state(StreamState.STARTING, "the camera's address changed: connecting")
                continue
            failures = 0 if error is None else failures + 1
            delay = backoff(max(failures, 1))
            reason = error or "the stream ended"
            if failures <= 1:  # once when it fails, not at every retry
                log.warning("%s %s stream: live video failed: %s", self.camera, self.kind,
                            reason)
            self._set_state(StreamState.DOWN, f"camera down: {reason}; retrying")
            self._stop.wait(delay)

    def _copy(self) -> str | None:
        """One ffmpeg run: None when it ended after giving video, else why it failed."""
        try:
            proc = subprocess.Popen(remux_argv(self.url), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    preexec_fn=die_with_parent)  # noqa: PLW1509 - prctl only
        except OSError as exc:
            return f"ffmpeg could not start: {exc}"
        self._proc = proc
        errors: deque[bytes] = deque(maxlen=5)
        drain = threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)
        drain.start()
        watchdog = threading.Thread(target=self._watch, args=(proc,), daemon=True)
        watchdog.start()
        got_video = False
        try:
            assert proc.stdout is not None
            got_video = self._read(proc.stdout)
        except Mp4Error as exc:
            errors.append(str(exc).encode())
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            drain.join(timeout=1)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            self._proc = None
            with self._lock:
                self._gop = _Gop()
        if got_video and not errors:
            return None
        said = b" ".join(errors).decode("utf-8", "replace").strip()
        return said[-300:] or f"ffmpeg exited with {proc.returncode}"

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        # ffmpeg's own timeout covers a dead connection; this a camera that stops sending
        # pictures on a live one.
        last = -1
        while proc.poll() is None and not self._stop.wait(STALL):
            if self.fragments == last:
                log.warning("%s %s stream: no video for %.0f s", self.camera, self.kind, STALL)
                proc.kill()
                return
            last = self.fragments

    def _read(self, out: IO[bytes]) -> bool:
        got_video = False
        pending: bytes | None = None  # a moof waiting for its mdat
        while True:
            box = read_box(out)
            if box is None:
                return got_video
            kind, data = box
            now = time.time()
            if kind == b"moov":
                info = parse_init(data)
                with self._lock:
                    self._gop = _Gop(init=self._init_prefix + data, info=info)
                    self.anchor = None
                    self._ties.clear()
                    for viewer in self.viewers:
                        self._send_init(viewer)
            elif kind == b"ftyp":
                self._init_prefix = data
            elif kind == b"moof":
                pending = data
            elif kind == b"mdat" and pending is not None:
                self._fan_out(pending + data, now)
                pending = None
                if not got_video:
                    got_video = True
                    self._set_state(StreamState.LIVE, "")

    def _fan_out(self, data: bytes, now: float) -> None:
        decode, keyframe = parse_fragment(data)
        fragment = Fragment(data, decode, keyframe)
        message = Message(data, len(data))
        with self._lock:
            gop = self._gop
            if gop.info is None:
                return
            self.fragments += 1
            # The least delayed fragment ties the stream's clock to the wall clock; only a
            # better (earlier) tie is news to the viewers.
            tie = now - decode / gop.info.timescale
            while self._ties and self._ties[-1][1] >= tie:
                self._ties.pop()
            self._ties.append((now, tie))
            while now - self._ties[0][0] > ANCHOR_WINDOW:
                self._ties.popleft()
            anchor = self._ties[0][1]
            if self.anchor is None or abs(anchor - self.anchor) > 0.001:
                self.anchor = anchor
                for viewer in self.viewers:
                    viewer.put(Message({"type": "clock", "anchor": anchor}))
            if keyframe:
                gop.fragments, gop.size = [], 0
            if gop.size + len(data) <= GOP_BYTES:
                gop.fragments.append(fragment)
                gop.size += len(data)
            else:  # a huge GOP: new viewers wait for the next keyframe instead
                gop.fragments, gop.size = [], 0
            for viewer in self.viewers:
                viewer.put(message, fragment=fragment)


def _drain(stream: IO[bytes] | None, into: deque[bytes]) -> None:
    if stream is None:
        return
    for line in stream:
        if line.strip():
            into.append(line.strip())


# -- the hub -----------------------------------------------------------------------------------

class Busy(Exception):
    """More streams or viewers than the caps allow."""


@dataclass(frozen=True)
class CameraStreams:
    """A camera's stream URLs (credentials in them): the sub stream may be missing."""

    main: str
    sub: str | None = None

    def url(self, kind: StreamKind) -> str:
        return self.sub if kind is StreamKind.SUB and self.sub else self.main


class LiveStreams:
    """Every upstream of the node, by camera and stream; thread-safe."""

    def __init__(self, sources: Callable[[], Mapping[str, CameraStreams]], *,
                 max_upstreams: int = MAX_UPSTREAMS, max_viewers: int = MAX_VIEWERS,
                 linger: float = LINGER,
                 make: Callable[[str, StreamKind, str], Upstream] = Upstream) -> None:
        self.sources = sources  # read at every use: cameras may be edited while running
        self.max_upstreams = max_upstreams
        self.max_viewers = max_viewers
        self.linger = linger
        self._make = make
        self._upstreams: dict[tuple[str, StreamKind], Upstream] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()

    @property
    def upstreams(self) -> dict[tuple[str, StreamKind], Upstream]:
        with self._lock:
            return dict(self._upstreams)

    def subscribe(self, camera: str, kind: StreamKind, viewer: Viewer) -> Upstream:
        """Attach ``viewer`` to the camera's stream, starting it if nobody watches it; raises
        Busy past the caps, KeyError for an unknown camera."""
        url = self.sources()[camera].url(kind)
        with self._lock:
            if self._closed:
                raise Busy("the node is stopping")
            if sum(len(u.viewers) for u in self._upstreams.values()) >= self.max_viewers:
                raise Busy(f"more than {self.max_viewers} live videos are watched at once")
            key = (camera, kind)
            upstream = self._upstreams.get(key)
            if upstream is not None and upstream.url != url:
                upstream.retarget(url)
            if upstream is None:
                if len(self._upstreams) >= self.max_upstreams and not self._reap_one():
                    raise Busy(f"more than {self.max_upstreams} camera streams are "
                               "copied at once")
                upstream = self._upstreams[key] = self._make(camera, kind, url)
                upstream.start()
                log.info("%s: live video of its %s stream started", camera, kind)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="stream-reaper",
                                                daemon=True)
                self._reaper.start()
        upstream.add(viewer)
        return upstream

    def unsubscribe(self, upstream: Upstream, viewer: Viewer) -> None:
        viewer.closed = True
        upstream.remove(viewer)
        self._wake.set()

    def _reap_one(self) -> bool:
        """Close an idle (lingering) upstream to make room; under the lock."""
        for key, upstream in self._upstreams.items():
            if not upstream.viewers:
                del self._upstreams[key]
                threading.Thread(target=upstream.close, daemon=True).start()
                return True
        return False

    def _reap(self) -> None:
        while not self._closed:
            self._wake.wait(1.0)
            self._wake.clear()
            now = time.monotonic()
            try:
                sources = self.sources()
            except Exception:  # a config being replaced: look again at the next round
                log.exception("live video: could not read the cameras")
                continue
            gone = []
            with self._lock:
                for key, upstream in list(self._upstreams.items()):
                    idle = upstream.idle_since
                    camera = sources.get(upstream.camera)
                    lingered = (not upstream.viewers and idle is not None
                                and now - idle >= self.linger)
                    if camera is None or lingered:  # None: removed or disabled while watched
                        gone.append(self._upstreams.pop(key))
                    elif camera.url(upstream.kind) != upstream.url:
                        upstream.retarget(camera.url(upstream.kind))
            for upstream in gone:
                log.info("%s: %s stream no longer watched (or no longer a camera), live video "
                         "stopped", upstream.camera, upstream.kind)
                upstream.close()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            upstreams, self._upstreams = list(self._upstreams.values()), {}
        self._wake.set()
        for upstream in upstreams:
            with contextlib.suppress(Exception):
                upstream.close()


def camera_streams(config: Config) -> dict[str, CameraStreams]:
    """The stream URLs (credentials in them) of ``config``'s enabled cameras."""
    return {name: CameraStreams(cam.main_source, cam.sub_source)
            for name, cam in config.cameras.items() if cam.enabled}
