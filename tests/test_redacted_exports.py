"""Redacted exports from the segments' kept boxes: laid out frame for frame on the joined file,
blurring what a fresh search blurs, searched once for exports and viewers alike."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
import yaml
from sqlalchemy import Connection, insert
from typer.testing import CliRunner

from custodes.app import Node
from custodes.cli import app
from custodes.media import ffmpeg_exe, probe
from custodes.record.playback import Segment, export_range, segments_in_range
from custodes.redaction.exports import (
    SegmentBoxes,
    joined_plan,
    lay_out,
    packets,
    redact_joined,
    redact_range,
)
from custodes.redaction.video import BoxPlan, plan_boxes
from custodes.store.schema import segments as segment_rows
from custodes.vision.faces import Box, FaceDetector
from test_auth import node_config, open_node

U8 = npt.NDArray[np.uint8]
WALKING = "video/intel_face-demographics-walking_from-gif.mp4"  # 480x270, 12 fps, 35 frames
T0 = 1_714_557_600.0
# The range starts 0.3 s into the first segment, between keyframes (every 3 frames = 0.25 s):
# the joined file starts at the keyframe before, frame 3, which is not a searched frame of the
# segment (every 2nd at 12 fps): the segments' searches and a fresh one look at other frames.
START, END = T0 + 0.3, T0 + 2.5


@dataclass
class Recorded:
    node: Node
    segments: list[Segment]
    joined: Path  # the range's segments joined as an export joins them


@pytest.fixture
def recorded(shared_data: Path, tmp_path: Path) -> Iterator[Recorded]:
    """The walking clip recorded as a camera records: 1 s MP4 segments (a keyframe every
    3 frames, no B-frames), indexed; and [START, END) joined by `export_range`."""
    clips = tmp_path / "clips"
    clips.mkdir()
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-i", str(shared_data / WALKING), "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-g", "3", "-keyint_min", "3", "-sc_threshold", "0", "-bf", "0",
        "-f", "segment", "-segment_time", "1", "-reset_timestamps", "1",
        "-segment_format", "mp4", str(clips / "clip%03d.mp4"),
    ], check=True)
    for node in open_node(tmp_path / "node"):
        rows: list[dict[str, Any]] = []
        start = T0
        for clip in sorted(clips.glob("clip*.mp4")):
            duration = probe(clip).duration
            target = node.layout.segment_path("cam1", start)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, target)
            rows.append({"camera": "cam1", "start": start, "end": start + duration,
                         "duration": duration, "bytes": target.stat().st_size,
                         "path": target.relative_to(node.layout.recordings).as_posix()})
            start += duration
        node.store.write(functools.partial(index, rows))
        joined = tmp_path / "joined.mp4"
        export_range(node.store, node.layout, "cam1", START, END, joined)
        with node.store.read() as conn:
            found = segments_in_range(conn, "cam1", START, END)
        assert len(found) == 3
        yield Recorded(node, found, joined)


def index(rows: list[dict[str, Any]], conn: Connection) -> None:
    for row in rows:
        conn.execute(insert(segment_rows).values(row))


def frames(path: Path) -> list[U8]:
    with av.open(str(path)) as container:
        return [np.asarray(v.to_ndarray(format="rgb24"), dtype=np.uint8)
                for v in container.decode(video=0)]


def covered(face: Box, boxes: list[Box]) -> float:
    """How much of `face` the boxes cover (0-1)."""
    mask = np.zeros((face.h, face.w), dtype=bool)
    for box in boxes:
        x0, y0 = max(box.x, face.x) - face.x, max(box.y, face.y) - face.y
        x1, y1 = min(box.right, face.right) - face.x, min(box.bottom, face.bottom) - face.y
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return float(mask.mean()) if mask.size else 0.0


def box_files(recorded: Recorded) -> dict[int, int]:
    """Segment id -> its box file's modification time (ns)."""
    copies = recorded.node.redacted_copies
    return {s.id: copies.boxes_path(recorded.node, s).stat().st_mtime_ns
            for s in recorded.segments}


def searches(caplog: pytest.LogCaptureFixture) -> int:
    """Segments searched for faces, as the box keeper logs each search."""
    return sum("searched for faces" in r.getMessage() for r in caplog.records
               if r.name == "custodes.redaction.copies")


@pytest.mark.slow
def test_each_joined_frame_is_laid_out_on_its_segment_s_frame(recorded: Recorded) -> None:
    sources = [recorded.node.layout.recordings / s.path for s in recorded.segments]

    placed = lay_out(packets(recorded.joined), [packets(p) for p in sources])

    joined = frames(recorded.joined)
    decoded = [frames(p) for p in sources]
    assert len(placed.sources) == len(joined)
    # The trimmed start: the first segment from its keyframe before START, not from frame 0.
    assert placed.sources[0] == (0, 3)
    assert [s for s, _ in placed.sources] == sorted(s for s, _ in placed.sources)
    # Stream copy: the very pictures, so each joined frame equals the one it is laid on.
    for j, (s, frame) in enumerate(placed.sources):
        assert np.array_equal(joined[j], decoded[s][frame]), j


@pytest.mark.slow
def test_an_export_from_kept_boxes_blurs_the_faces_a_fresh_search_blurs(
        recorded: Recorded) -> None:
    kept = joined_plan(recorded.joined, recorded.segments, SegmentBoxes(recorded.node)).plan
    fresh = plan_boxes(recorded.joined)

    assert (kept.frames, kept.width, kept.height, kept.rate) == (
        fresh.frames, fresh.width, fresh.height, fresh.rate)
    # Faces the analysis would report (sure ones), in every frame of the joined file.
    detector = FaceDetector(min_size=0)
    blurred_by_fresh = missed_by_kept = 0
    for j, rgb in enumerate(frames(recorded.joined)):
        for face in detector.detect(rgb):
            if covered(face.box, fresh.boxes.get(j, [])) >= 0.9:
                blurred_by_fresh += 1
                missed_by_kept += covered(face.box, kept.boxes.get(j, [])) < 0.9
    assert blurred_by_fresh >= 40  # two walkers in most of the 27 frames
    assert missed_by_kept == 0


@pytest.mark.slow
def test_a_second_export_and_a_viewer_search_nothing(
        recorded: Recorded, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="custodes.redaction.copies")
    boxes = SegmentBoxes(recorded.node)

    first = redact_joined(recorded.joined, tmp_path / "first.mp4", recorded.segments, boxes)

    assert first["boxes"] == {"segments": 3, "kept": 0, "searched": 3}
    assert searches(caplog) == 3
    kept = box_files(recorded)
    caplog.clear()

    second = redact_joined(recorded.joined, tmp_path / "second.mp4", recorded.segments, boxes)
    copy = recorded.node.redacted_copies.get(recorded.node, recorded.segments[1])

    assert second["boxes"] == {"segments": 3, "kept": 3, "searched": 0}
    # The export job's transform finds the same segments and boxes for the range.
    third = redact_range(recorded.node, "cam1", START, END, recorded.joined,
                         tmp_path / "third.mp4")
    assert third["boxes"] == second["boxes"]
    assert searches(caplog) == 0
    assert box_files(recorded) == kept  # not searched again, not rewritten
    assert copy.is_file()
    assert probe(tmp_path / "second.mp4").frames == len(frames(recorded.joined))


@pytest.mark.slow
def test_a_kept_plan_that_does_not_fit_its_segment_is_searched_again(
        recorded: Recorded, caplog: pytest.LogCaptureFixture) -> None:
    boxes = SegmentBoxes(recorded.node)
    good = joined_plan(recorded.joined, recorded.segments, boxes).plan
    middle = recorded.segments[1]
    path = recorded.node.redacted_copies.boxes_path(recorded.node, middle)
    right = BoxPlan.load(path, boxes.settings)
    assert right is not None
    # A plan one frame short, its boxes one frame early: laid out, it would blur beside the
    # faces from the segment's second frame on.
    wrong = BoxPlan(**{**vars(right), "frames": right.frames - 1,
                       "boxes": {i - 1: b for i, b in right.boxes.items() if i > 0}})
    wrong.save(path)
    caplog.set_level(logging.INFO, logger="custodes.redaction.copies")

    again = joined_plan(recorded.joined, recorded.segments, boxes)

    assert (again.kept, again.searched) == (2, 1)
    assert searches(caplog) == 1
    assert again.plan.boxes == good.boxes
    assert BoxPlan.load(path, boxes.settings) == right  # the kept plan is put right


@pytest.mark.slow
def test_a_file_that_is_not_the_segments_joined_is_searched_whole(
        recorded: Recorded, tmp_path: Path) -> None:
    # The same pictures re-encoded: not the segments' packets, so nothing can be laid out.
    other = tmp_path / "reencoded.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
                    "-i", str(recorded.joined), "-c:v", "libx264", "-preset", "ultrafast",
                    str(other)], check=True)

    info = redact_joined(other, tmp_path / "out.mp4", recorded.segments,
                         SegmentBoxes(recorded.node))

    assert info["boxes"]["whole_file"] is True
    assert info["frames"] == len(frames(other))
    assert info["faces_blurred"] >= 2


@pytest.mark.slow
def test_the_export_command_uses_the_node_s_kept_boxes(recorded: Recorded, tmp_path: Path) -> None:
    joined_plan(recorded.joined, recorded.segments, SegmentBoxes(recorded.node))  # a viewer's
    kept = box_files(recorded)
    config = tmp_path / "custodes.yaml"
    config.write_text(yaml.safe_dump(node_config(tmp_path / "node")))

    result = CliRunner().invoke(app, [
        "export", "create", "-c", str(config), "--camera", "cam1",
        "--from", "2024-05-01T10:00:00Z", "--to", "2024-05-01T10:00:02Z", str(tmp_path / "out"),
    ])

    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["redaction"]["boxes"] == {"segments": 2, "kept": 2, "searched": 0}
    assert box_files(recorded) == kept
