"""Load an MP4 video track into RTP payloads: H.264 per RFC 6184, H.265 per RFC 7798.

Everything here runs once per sample file; the server then only prepends RTP headers, so many
cameras can share one clip in memory.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

RTP_CLOCK = 90_000

# TCP interleaving limits an RTP packet to 65535 bytes; ffmpeg reads up to that, VLC (live555)
# too. Big packets keep the per-frame work of a 5 MP stream to a handful of writes.
DEFAULT_MAX_PAYLOAD = 60_000

_H264_AUD, _H264_SPS, _H264_PPS, _H264_FU_A = 9, 7, 8, 28
_H265_VPS, _H265_SPS, _H265_PPS, _H265_AUD, _H265_FU = 32, 33, 34, 35, 49


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One frame. The RTP marker bit belongs on the packet of the last payload."""

    pts: int  # RTP_CLOCK ticks from the first frame of the clip
    keyframe: bool
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Clip:
    codec: Literal["H264", "H265"]  # the encoding name SDP uses
    width: int
    height: int
    fps: float
    parameter_sets: tuple[bytes, ...]  # SPS, PPS (and VPS first for H.265), as NAL units
    units: tuple[AccessUnit, ...]
    period: int  # RTP_CLOCK ticks of one pass through the clip, the step between loops

    @property
    def bytes_per_second(self) -> float:
        size = sum(len(p) for unit in self.units for p in unit.payloads)
        return size * RTP_CLOCK / self.period

    def fmtp(self) -> str:
        """The SDP format parameters, carrying the parameter sets out of band."""

        def b64(nal: bytes) -> str:
            return base64.b64encode(nal).decode("ascii")

        if self.codec == "H264":
            sps = [n for n in self.parameter_sets if n[0] & 0x1F == _H264_SPS]
            sets = ",".join(b64(n) for n in self.parameter_sets)
            return (
                f"packetization-mode=1;profile-level-id={sps[0][1:4].hex().upper()};"
                f"sprop-parameter-sets={sets}"
            )
        names = {_H265_VPS: "sprop-vps", _H265_SPS: "sprop-sps", _H265_PPS: "sprop-pps"}
        return ";".join(f"{names[_h265_type(n)]}={b64(n)}" for n in self.parameter_sets)


def load_clip(path: Path, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Clip:
    """Demux (no decoding) the first video stream of an MP4/MKV file into RTP payloads."""
    if not 100 <= max_payload <= 65_535 - 12:
        raise ValueError("max_payload must fit an interleaved RTP packet")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.name == "h264":
            codec: Literal["H264", "H265"] = "H264"
            length_size, parameter_sets = _parse_avcc(bytes(ctx.extradata or b""))
        elif ctx.name == "hevc":
            codec = "H265"
            length_size, parameter_sets = _parse_hvcc(bytes(ctx.extradata or b""))
        else:
            raise ValueError(f"{path}: only H.264 and H.265 can be streamed, not {ctx.name}")
        # Delimiters carry nothing over RTP, where the marker bit ends the access unit.
        aud = _H264_AUD if codec == "H264" else _H265_AUD
        if stream.time_base is None:
            raise ValueError(f"{path}: video stream without a time base")
        time_base = Fraction(stream.time_base)
        width, height = ctx.width, ctx.height
        rate = stream.average_rate
        frame_ticks = round(RTP_CLOCK / Fraction(rate)) if rate else 0

        units: list[AccessUnit] = []
        first: int | None = None
        last_duration = 0
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue  # the demuxer's flush packet
            first = packet.pts if first is None else first
            pts = round((packet.pts - first) * time_base * RTP_CLOCK)
            if units and pts <= units[-1].pts:
                # Pacing follows pts, so frames must arrive in presentation order.
                raise ValueError(f"{path}: B-frames are not supported; IP cameras do not use them")
            nals = [
                n
                for n in _split_length_prefixed(bytes(packet), length_size)
                if _nal_type(codec, n) != aud
            ]
            keyframe = bool(packet.is_keyframe)
            if keyframe and not any(_is_parameter_set(codec, n) for n in nals):
                # Clients that join mid-stream or ignore the SDP need the sets in band.
                nals = [*parameter_sets, *nals]
            payloads = tuple(p for n in nals for p in _fragment(codec, n, max_payload))
            units.append(AccessUnit(pts=pts, keyframe=keyframe, payloads=payloads))
            last_duration = round(packet.duration * time_base * RTP_CLOCK) if packet.duration else 0

    if not units:
        raise ValueError(f"{path}: no video packets")
    if not units[0].keyframe:
        raise ValueError(f"{path}: the clip must start with a keyframe to loop cleanly")
    step = last_duration or frame_ticks or (units[-1].pts // max(len(units) - 1, 1)) or 1
    period = units[-1].pts + step
    return Clip(
        codec=codec,
        width=width,
        height=height,
        fps=float(rate) if rate else RTP_CLOCK * len(units) / period,
        parameter_sets=tuple(parameter_sets),
        units=tuple(units),
        period=period,
    )


def _nal_type(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "H264" else _h265_type(nal)


def _h265_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "H264":
        return _nal_type(codec, nal) in (_H264_SPS, _H264_PPS)
    return _h265_type(nal) in (_H265_VPS, _H265_SPS, _H265_PPS)


def _split_length_prefixed(data: bytes, length_size: int) -> Iterator[bytes]:
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise ValueError("corrupt length-prefixed NAL unit")
        yield data[pos : pos + size]
        pos += size


def _parse_avcc(extradata: bytes) -> tuple[int, list[bytes]]:
    """Length-field size and SPS/PPS list from an avcC box (ISO/IEC 14496-15 5.3.3)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise ValueError("expected avcC extradata (H.264 in MP4/MKV, not Annex B)")
    length_size = (extradata[4] & 0x03) + 1
    sets: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count uses 5 bits, PPS count a whole byte
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            sets.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return length_size, sets


def _parse_hvcc(extradata: bytes) -> tuple[int, list[bytes]]:
    """Length-field size and VPS/SPS/PPS list from an hvcC box (ISO/IEC 14496-15 8.3.3)."""
    if len(extradata) < 23 or extradata[0] != 1:
        raise ValueError("expected hvcC extradata (H.265 in MP4/MKV, not Annex B)")
    length_size = (extradata[21] & 0x03) + 1
    by_type: dict[int, list[bytes]] = {}
    pos = 23
    for _ in range(extradata[22]):
        nal_type = extradata[pos] & 0x3F
        count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            by_type.setdefault(nal_type, []).append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    # x265 also stores an SEI here; clients only want the parameter sets, in this order.
    sets = [n for t in (_H265_VPS, _H265_SPS, _H265_PPS) for n in by_type.get(t, [])]
    return length_size, sets


def _fragment(codec: str, nal: bytes, max_payload: int) -> list[bytes]:
    """A single-NAL payload, or FU-A (H.264) / FU (H.265) fragments when it is too big."""
    if len(nal) <= max_payload:
        return [nal]
    if codec == "H264":
        head = bytes(((nal[0] & 0xE0) | _H264_FU_A,))
        nal_type, body = nal[0] & 0x1F, memoryview(nal)[1:]
    else:
        head = bytes(((nal[0] & 0x81) | (_H265_FU << 1), nal[1]))
        nal_type, body = _h265_type(nal), memoryview(nal)[2:]
    chunk = max_payload - len(head) - 1
    fragments = []
    for start in range(0, len(body), chunk):
        flags = (0x80 if start == 0 else 0) | (0x40 if start + chunk >= len(body) else 0)
        fragments.append(head + bytes((flags | nal_type,)) + body[start : start + chunk])
    return fragments
