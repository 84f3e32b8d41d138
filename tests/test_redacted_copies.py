"""Redacted copies for viewers: a segment searched for faces once, its boxes reused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from custodes.app import Node
from custodes.media import probe
from custodes.record.playback import Segment
from custodes.redaction.copies import RedactedCopies
from custodes.redaction.detect import RedactionSettings
from custodes.store import schema
from footage import add_segments, encode_clips
from test_auth import open_node

T0 = 1_714_557_600.0


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[Node, Segment]]:
    clips = encode_clips(tmp_path / "clips", count=1)
    for node in open_node(tmp_path / "node"):
        add_segments(node.store, node.layout, "cam1", [T0], clips)
        with node.store.read() as conn:
            row = conn.execute(select(schema.segments)).one()
        yield node, Segment.from_row(row)


def test_a_segment_is_searched_once_and_its_boxes_go_with_it(
        segment: tuple[Node, Segment]) -> None:
    node, seg = segment
    copies = RedactedCopies(workers=1)

    copy = copies.get(node, seg)

    boxes = copies.boxes_path(node, seg)
    assert copy.is_file()
    assert boxes.is_file()
    assert probe(copy).frames == probe(node.layout.recordings / seg.path).frames
    searched = boxes.stat().st_mtime_ns
    # The copy expires (or zones change): the next viewer gets a new one from the same boxes.
    copy.unlink()
    assert copies.get(node, seg) == copy
    assert copy.is_file()
    assert boxes.stat().st_mtime_ns == searched
    # Other settings never reuse these boxes.
    other = RedactedCopies(settings=RedactionSettings(detect_fps=2.0))
    assert other.boxes_path(node, seg) != boxes
    assert other.path(node, seg) != copy

    node.store.write(lambda conn: conn.execute(
        schema.segments.delete().where(schema.segments.c.id == seg.id)))
    assert copies.prune(node) == 2
    assert not copy.exists()
    assert not boxes.exists()
