"""Redacted exports from the segments' kept boxes: an export costs no second search.

    info = redact_range(node, camera, start, end, joined, dst)     # the export job's transform
    plan = joined_plan(joined, segments, SegmentBoxes(node))       # the plan alone

An export joins the range's segments into one file by stream copy (`custodes.record.playback`)
and blurs that file. Every segment has, or gets, its box plan kept beside its redacted copies
(`custodes.redaction.copies`): searching the joined file again would repeat the most expensive
part of the work for footage already searched for a viewer, and a viewer after the export would
search it a third time. So each segment's kept plan is taken (searched and kept when absent)
and its frames are put where they are in the joined file.

Where they are is found exactly, not by time: stream copy moves each segment's coded pictures
(packets) unchanged into the joined file, so the joined file's packets are a run of the
segments' packets, byte for byte, starting at the keyframe at or before the range's start and
ending where the range ends. Each packet is identified by a digest of its bytes; the joined
run is looked up in the segments' packets; a packet's frame is its rank by presentation time
in its file. That holds whatever ffmpeg does at the cut (seek to a keyframe, drop after an
outpoint), and whatever the segments' lengths.

Fail closed. A kept plan whose frame count or picture size is not the segment's (made by other
code, a replaced file) is searched again, and kept in its place. When the joined file cannot be
laid out on the segments (not a run of their packets: a segment deleted meanwhile, a re-encoded
input; packets a player would discard; changing frame rates), or blurring with the laid-out
plan fails, the whole joined file is searched, as before this module.

A fresh search of the joined file would link a face's track across a segment boundary and hold
its box `hold` seconds past the last sighting, into the next segment; kept plans end at their
segment. So at each boundary the boxes of the frame on either side are carried `hold` frames
into the other segment, grown as a held box grows (without the track's motion, which a plan no
longer has): more blur at the boundary, never less.

Counts in the description differ from a fresh search's: `faces_blurred` counts a face once per
segment it is seen in, `detections` counts the whole segments' searched frames.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import av

from custodes.record.playback import Segment, segments_in_range
from custodes.redaction.blur import Polygon
from custodes.redaction.detect import RedactionSettings
from custodes.redaction.video import (
    HOLD_GROWTH,
    BoxPlan,
    RedactionError,
    redact_file,
)
from custodes.vision.faces import Box

if TYPE_CHECKING:
    from custodes.app import Node

log = logging.getLogger(__name__)


class Misfit(Exception):
    """The joined file cannot be laid out on the segments' kept plans."""


@dataclass(frozen=True)
class Packets:
    """A file's coded pictures in decode order: a digest of each, and each one's frame (its
    rank by presentation time, the order a decoder hands frames out)."""

    digests: list[bytes]
    frames: list[int]
    rate: Fraction
    width: int
    height: int


@dataclass(frozen=True)
class Placement:
    """Where each frame of the joined file comes from: (segment index, frame in segment)."""

    sources: list[tuple[int, int]]  # by frame of the joined file
    rate: Fraction
    width: int
    height: int

    def used(self) -> list[int]:
        """The segments (indexes) the joined file takes frames from, in order."""
        return sorted({segment for segment, _ in self.sources})


@dataclass
class JoinedPlan:
    plan: BoxPlan
    kept: int  # segments whose kept plan was used as it was
    searched: int  # segments searched now (no plan kept, or the kept one did not fit)


class SegmentBoxes:
    """A node's kept box plans (`RedactedCopies.boxes`) and the segments' files."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.copies = node.redacted_copies
        self.settings: RedactionSettings = self.copies.settings

    def source(self, segment: Segment) -> Path:
        base = self.node.layout.recordings.resolve()
        path = (base / segment.path).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise Misfit(f"segment {segment.id}: no file {segment.path}")
        return path

    def plan(self, segment: Segment) -> tuple[BoxPlan, bool]:
        """The segment's plan (searched and kept if absent), and whether it was searched."""
        path = self.copies.boxes_path(self.node, segment)
        searched = not path.is_file()
        return self.copies.boxes(self.node, segment), searched

    def search_again(self, segment: Segment) -> BoxPlan:
        """A kept plan that does not fit its segment is replaced by a new search, so that a
        viewer's copy does not use it either."""
        self.copies.boxes_path(self.node, segment).unlink(missing_ok=True)
        return self.copies.boxes(self.node, segment)


def packets(path: Path) -> Packets:
    """Read (demux, no decoding) the video packets of `path`. Raises Misfit."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise Misfit(f"{path.name} cannot be read: {exc}") from None
    try:
        if not container.streams.video:
            raise Misfit(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        times: list[int] = []
        digests: list[bytes] = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker, not a picture
            # A discarded packet (an MP4 edit list's pre-roll) is decoded but not shown: the
            # frames would no longer be the packets.
            if packet.pts is None or packet.is_discard:
                raise Misfit(f"{path.name}: a packet without a time, or one to discard")
            times.append(packet.pts)
            digests.append(_digest(bytes(packet), codec))
    except av.FFmpegError as exc:
        raise Misfit(f"{path.name} cannot be read: {exc}") from None
    finally:
        container.close()
    if len(set(times)) != len(times):
        raise Misfit(f"{path.name}: two packets with one presentation time")
    order = sorted(range(len(times)), key=times.__getitem__)
    frames = [0] * len(times)
    for rank, index in enumerate(order):
        frames[index] = rank
    return Packets(digests, frames, rate, width, height)


def _digest(data: bytes, codec: str) -> bytes:
    """A digest of a packet's picture: for H.264 and H.265 in MP4 (NAL units, each after its
    4-byte length), of its slices alone. Joining adds the parameter sets in front of each
    keyframe and leaves out the encoder's notes (SEI): not the picture, but other bytes."""
    picture = _slices(data, codec) if codec in _VCL else None
    return hashlib.blake2b(data if picture is None else picture, digest_size=16).digest()


# Per codec: where a NAL unit's type is in its first byte (mask, shift), and the types that
# carry a picture's slices.
_VCL: Final = {"h264": (0x1F, 0, range(1, 6)), "hevc": (0x7E, 1, range(32))}


def _slices(data: bytes, codec: str) -> bytes | None:
    """The slice NAL units of a length-prefixed packet, or None if it is not one."""
    mask, shift, slices = _VCL[codec]
    found = bytearray()
    at = 0
    while at + 4 < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        unit = data[at + 4:at + 4 + size]
        if size == 0 or len(unit) != size:
            return None
        if (unit[0] & mask) >> shift in slices:
            found += unit
        at += 4 + size
    return bytes(found) if at == len(data) and found else None


def lay_out(joined: Packets, segments: Sequence[Packets]) -> Placement:
    """Find the joined file's packets as one run of the segments' packets (in order), and
    so each joined frame's source frame. Raises Misfit."""
    chain = [(s, q) for s, seg in enumerate(segments) for q in range(len(seg.digests))]
    digests = [segments[s].digests[q] for s, q in chain]
    count = len(joined.digests)
    if count == 0:
        raise Misfit("the joined file has no pictures")
    # Real footage never repeats a packet's bytes over a run (sensor noise): the first start
    # where the whole run matches is the only one.
    start = next((i for i, d in enumerate(digests[:len(digests) - count + 1])
                  if d == joined.digests[0] and digests[i:i + count] == joined.digests), None)
    if start is None:
        raise Misfit("the joined file is not a run of the segments' pictures")
    sources: list[tuple[int, int] | None] = [None] * count
    for r in range(count):
        s, q = chain[start + r]
        sources[joined.frames[r]] = (s, segments[s].frames[q])
    return Placement([src for src in sources if src is not None], joined.rate, joined.width,
                  joined.height)


def joined_plan(joined: Path, segments: Sequence[Segment], boxes: SegmentBoxes) -> JoinedPlan:
    """The box plan of `joined` (the segments joined by stream copy, in order) from the
    segments' kept plans; see the module's text. Raises Misfit."""
    settings = boxes.settings
    found = [packets(boxes.source(s)) for s in segments]
    placed = lay_out(packets(joined), found)
    used = placed.used()
    plans: dict[int, BoxPlan] = {}
    searched: set[int] = set()
    for i, (plan_i, was_searched) in zip(used, _plans([segments[i] for i in used], boxes),
                                       strict=True):
        plan = plan_i
        if was_searched:
            searched.add(i)
        if not _fits(plan, found[i], placed):
            log.warning("segment %d: its kept boxes do not fit it (%d frames of %d, %dx%d): "
                        "searched again", segments[i].id, plan.frames, len(found[i].frames),
                        plan.width, plan.height)
            plan = boxes.search_again(segments[i])
            searched.add(i)
            if not _fits(plan, found[i], placed):
                raise Misfit(f"segment {segments[i].id}: its frames are not its packets")
        plans[i] = plan
    rates = {p.rate for p in plans.values()} | {placed.rate}
    strides = {p.stride for p in plans.values()}
    if len(rates) != 1 or len(strides) != 1:
        raise Misfit(f"frame rates {sorted(rates)} or strides {sorted(strides)} differ")
    combined: dict[int, list[Box]] = {}
    joins = []
    for j, (s, frame) in enumerate(placed.sources):
        if j and placed.sources[j - 1][0] != s:
            joins.append(j)
        if frame in plans[s].boxes:
            combined[j] = list(plans[s].boxes[frame])
    stride = strides.pop()
    hold = max(math.ceil(settings.hold * float(placed.rate)), stride)
    _carry(combined, joins, len(placed.sources), hold, settings.spread / float(placed.rate))
    plan = BoxPlan(settings=settings.digest(), frames=len(placed.sources), width=placed.width,
                   height=placed.height, rate=placed.rate, stride=stride,
                   detections=sum(p.detections for p in plans.values()),
                   faces_blurred=sum(p.faces_blurred for p in plans.values()),
                   boxes=combined)
    return JoinedPlan(plan, kept=len(used) - len(searched), searched=len(searched))


def redact_joined(src: Path, dst: Path, segments: Sequence[Segment], boxes: SegmentBoxes, *,
                  zones: Sequence[Polygon] = ()) -> dict[str, Any]:
    """`redact_file(src, dst, zones=zones)` for `src` joined from `segments`, with the
    segments' kept boxes where they fit, else with a search of `src` (see the module's text).
    The description says which, under "boxes"."""
    settings = boxes.settings
    try:
        joined = joined_plan(src, segments, boxes)
    except (Misfit, RedactionError, OSError) as exc:
        # Also a segment that cannot be searched or whose file went (retention, meanwhile):
        # the joined file is what is exported, and it can always be searched itself.
        log.warning("%s: the segments' kept boxes cannot be used (%s): searching it whole",
                    src.name, exc)
    else:
        try:
            info = redact_file(src, dst, zones=zones, settings=settings, plan=joined.plan)
        except RedactionError as exc:
            # The decoder did not hand out one frame per packet (or the encoder failed): the
            # laid-out plan cannot be trusted; a whole search decides frame by frame.
            log.warning("%s: blurring with the kept boxes failed (%s): searching it whole",
                        src.name, exc)
        else:
            return {**info, "boxes": {"segments": joined.kept + joined.searched,
                                      "kept": joined.kept, "searched": joined.searched}}
    info = redact_file(src, dst, zones=zones, settings=settings)
    return {**info, "boxes": {"segments": len(segments), "kept": 0, "searched": 0,
                              "whole_file": True}}


def redact_range(node: Node, camera: str, start: float, end: float, src: Path,  # noqa: PLR0917
                 dst: Path) -> dict[str, Any]:
    """The export transform: `src` is `camera`'s footage over [start, end) joined by
    `custodes.record.playback.export_range`; blurred with the camera's privacy zones and the
    segments' kept boxes (searched and kept now where missing)."""
    with node.store.read() as conn:
        segments = segments_in_range(conn, camera, start, end)
    return redact_joined(src, dst, segments, SegmentBoxes(node),
                         zones=node.config.cameras[camera].privacy_zones)


def _fits(plan: BoxPlan, segment: Packets, placed: Placement) -> bool:
    return (plan.frames == len(segment.frames)
            and (plan.width, plan.height) == (placed.width, placed.height))


def _plans(segments: Sequence[Segment], boxes: SegmentBoxes) -> list[tuple[BoxPlan, bool]]:
    """Each segment's plan; the searches of those without one share the cores (the detector
    runs on one thread: `RedactionSettings.detector`)."""
    workers = max(1, min(len(segments), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="export-boxes") as pool:
        return list(pool.map(boxes.plan, segments))


def _carry(boxes: dict[int, list[Box]], joins: Sequence[int], frames: int, hold: int,
           spread: float) -> None:
    """At each boundary (`joins`: the first frame of a segment after another), the boxes of
    the frames on either side carried `hold` frames into the other segment, grown as a held
    box grows (HOLD_GROWTH, then `spread` a frame): a track a whole search would have held
    across the boundary (see the module's text)."""
    carried: list[tuple[int, Box]] = []
    for j in joins:
        for step in range(1, hold + 1):
            growth = HOLD_GROWTH + spread * step
            if j - 1 + step < frames:
                carried += [(j - 1 + step, b.expand(growth)) for b in boxes.get(j - 1, ())]
            if j - step >= 0:
                carried += [(j - step, b.expand(growth)) for b in boxes.get(j, ())]
    for index, box in carried:
        boxes.setdefault(index, []).append(box)
