"""Ranges and export on real segments: the exported file must play and last as long as asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from custodes.media import probe
from custodes.record.layout import Layout
from custodes.record.playback import (
    ExportError,
    Span,
    coverage,
    export_range,
    segments_in_range,
)
from custodes.store.db import Store
from footage import SEGMENT_SECONDS, add_segments, encode_clips, open_node

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
GOP = 1.0  # seconds between keyframes in the clips


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return encode_clips(tmp_path_factory.mktemp("clips"), count=4)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Store, Layout]]:
    with open_node(tmp_path / "var") as opened:
        yield opened


@pytest.fixture
def recorded(node: tuple[Store, Layout], clips: list[Path]) -> tuple[Store, Layout]:
    """cam01: four contiguous segments from T0 to T0 + 8 s."""
    store, layout = node
    add_segments(store, layout, "cam01", [T0 + n * SEGMENT_SECONDS for n in range(4)], clips)
    return node


def decoded_frames(path: Path) -> int:
    """Decode every frame; PyAV raises on anything a player would choke on."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_export_across_segment_boundaries_plays(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    out = tmp_path / "export.mp4"

    result = export_range(store, layout, "cam01", T0 + 1.5, T0 + 6.5, out)

    assert result.path == out
    assert [s.start for s in result.segments] == [T0 + n * 2 for n in range(4)]
    assert result.gaps == []
    # Stream copy starts at the keyframe at or before the start: up to one GOP more.
    assert 5.0 - 0.1 <= result.duration <= 5.0 + GOP + 0.1
    assert probe(out).duration == result.duration
    assert decoded_frames(out) == pytest.approx(result.duration * 15, abs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.mp4", "var"]  # no leftovers


def test_export_within_one_segment(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    out = tmp_path / "short.mp4"

    result = export_range(store, layout, "cam01", T0 + 2.0, T0 + 3.0, out)

    assert len(result.segments) == 1
    assert 1.0 - 0.1 <= result.duration <= 1.0 + GOP + 0.1
    assert decoded_frames(out) > 0


def test_export_of_a_range_without_footage_fails(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    with pytest.raises(ExportError, match=r"no recordings of cam01 between 2023-11-14 22:00:00Z"):
        export_range(store, layout, "cam01", T0 - 800, T0 - 100, tmp_path / "a.mp4")
    with pytest.raises(ExportError, match="no recordings of cam09"):
        export_range(store, layout, "cam09", T0, T0 + 4, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


def test_export_refuses_an_inverted_range(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    with pytest.raises(ExportError, match="must end after it starts"):
        export_range(store, layout, "cam01", T0 + 4, T0 + 4, tmp_path / "a.mp4")


def test_export_never_overwrites(recorded: tuple[Store, Layout], tmp_path: Path) -> None:
    store, layout = recorded
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"someone else's file")
    with pytest.raises(ExportError, match="exists already"):
        export_range(store, layout, "cam01", T0, T0 + 4, out)
    assert out.read_bytes() == b"someone else's file"


def test_gaps_are_refused_unless_allowed(
    node: tuple[Store, Layout], clips: list[Path], tmp_path: Path
) -> None:
    store, layout = node
    # Footage at T0..T0+4 and T0+10..T0+14: a 6 s hole, and the range runs 2 s past the end.
    add_segments(store, layout, "cam01", [T0, T0 + 2, T0 + 10, T0 + 12], clips)
    out = tmp_path / "gappy.mp4"

    with pytest.raises(ExportError) as caught:
        export_range(store, layout, "cam01", T0 + 1, T0 + 16, out)
    assert str(caught.value) == (
        "the recordings of cam01 between 2023-11-14 22:13:21Z and 2023-11-14 22:13:36Z have "
        "gaps: 2023-11-14 22:13:24Z to 2023-11-14 22:13:30Z (6.0 s); "
        "2023-11-14 22:13:34Z to 2023-11-14 22:13:36Z (2.0 s)"
    )
    assert not out.exists()

    result = export_range(store, layout, "cam01", T0 + 1, T0 + 16, out, allow_gaps=True)

    assert result.gaps == [Span(T0 + 4, T0 + 10), Span(T0 + 14, T0 + 16)]
    # The holes are left out: 3 s before, 4 s after, plus up to a GOP at the start.
    assert 7.0 - 0.1 <= result.duration <= 7.0 + GOP + 0.1
    assert decoded_frames(out) > 0


def test_a_broken_segment_fails_with_ffmpegs_reason(
    recorded: tuple[Store, Layout], tmp_path: Path
) -> None:
    store, layout = recorded
    with store.read() as conn:
        second = segments_in_range(conn, "cam01", T0 + 2, T0 + 3)[0]
    (layout.recordings / second.path).write_bytes(b"\x00" * 1000)
    out = tmp_path / "broken.mp4"

    with pytest.raises(ExportError, match=r"ffmpeg failed \(exit status \d+\):\n.+"):
        export_range(store, layout, "cam01", T0, T0 + 8, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]  # nothing left behind


def test_coverage_finds_holes_inside_and_at_the_ends(
    node: tuple[Store, Layout], clips: list[Path]
) -> None:
    store, layout = node
    # A 0.5 s hole (within tolerance) between the first two, a 3 s hole before the third.
    add_segments(store, layout, "cam01", [T0, T0 + 2.5, T0 + 7.5], clips)
    with store.read() as conn:
        found = segments_in_range(conn, "cam01", T0 + 1, T0 + 20)
        spans, gaps = coverage(conn, "cam01", T0 - 5, T0 + 20)
        _, strict = coverage(conn, "cam01", T0, T0 + 9.5, tolerance=0.1)

    assert [s.start for s in found] == [T0, T0 + 2.5, T0 + 7.5]
    assert spans == [Span(T0, T0 + 4.5), Span(T0 + 7.5, T0 + 9.5)]
    assert gaps == [Span(T0 - 5, T0), Span(T0 + 4.5, T0 + 7.5), Span(T0 + 9.5, T0 + 20)]
    assert strict == [Span(T0 + 2, T0 + 2.5), Span(T0 + 4.5, T0 + 7.5)]
