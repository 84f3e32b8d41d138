"""`custodes redact IN.mp4 OUT.mp4`: any video file redacted by the node's redactor, e.g.
footage from another system before it is released."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from custodes.commands import console, err
from custodes.redaction.video import RedactionError, Stage, frame_count, redact_file

_LABELS: dict[Stage, str] = {"search": "searching for faces", "blur": "blurring, encoding"}


def redact(
    source: Annotated[Path, typer.Argument(help="Video file to redact", exists=True,
                                           dir_okay=False)],
    target: Annotated[Path, typer.Argument(help="Redacted MP4 to write (must not exist)")],
) -> None:
    """Blur every face in a video file, as custodes blurs what leaves the node."""
    try:
        total = frame_count(source)
        with Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            tasks: dict[Stage, TaskID] = {
                stage: bar.add_task(label, total=total or None)
                for stage, label in _LABELS.items()}

            def advance(stage: Stage, done: int, frames: int) -> None:
                bar.update(tasks[stage], completed=done, total=frames or None)

            info = redact_file(source, target, progress=advance)
    except RedactionError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{target}: {info['frames']} frames, {info['faces_blurred']} faces blurred "
                  f"({info['detections']} detections), {info['seconds']} s", highlight=False)
