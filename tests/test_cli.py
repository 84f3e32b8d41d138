"""The `custodes` command's one-shot subcommands, through typer's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from custodes.cli import app

runner = CliRunner()

CONFIG = """\
sites:
  s:
    name: Site
cameras:
  door:
    site: s
    location: entrance
    purpose: Front door
    main_url: rtsp://127.0.0.1:9/stream
storage:
  path: var
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "custodes.yaml"
    path.write_text(CONFIG)
    return path


def test_check_config_ok(config: Path) -> None:
    result = runner.invoke(app, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok — 1 sites, 1 cameras" in result.output


def test_check_config_lists_errors_with_lines_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.replace("    purpose: Front door\n", "    colour: red\n"))
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "line 8: cameras.door.colour: unknown key" in result.output
    assert "line 5: cameras.door.purpose: required key is missing" in result.output


def test_check_config_refuses_a_password_that_breaks_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: `p@ss#1` from the environment moved the host, and check-config said ok."""
    monkeypatch.setenv("DOOR_PASSWORD", "p@ss#1")
    path = tmp_path / "custodes.yaml"
    path.write_text(CONFIG.replace("rtsp://127.0.0.1", "rtsp://admin:${DOOR_PASSWORD}@127.0.0.1"))
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "line 9: cameras.door.main_url: the URL holds a '#'" in result.output
    assert "p@ss#1" not in result.output
    # The same password in its own field is fine.
    path.write_text(CONFIG.replace(
        "    main_url: rtsp://127.0.0.1:9/stream\n",
        "    main_url: rtsp://127.0.0.1:9/stream\n    username: admin\n"
        "    password: ${DOOR_PASSWORD}\n"))
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check-config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_holds_are_added_listed_and_released(config: Path) -> None:
    add = runner.invoke(app, [
        "hold", "add", "-c", str(config), "--camera", "door", "--from", "2026-11-01T10:00:00Z",
        "--to", "2026-11-01T11:00:00Z", "--reason", "complaint 2026-17", "--by", "dpo",
    ])
    assert add.exit_code == 0, add.output
    assert "hold 1 placed" in add.output
    listed = runner.invoke(app, ["hold", "list", "-c", str(config)])
    assert "complaint 2026-17" in listed.output
    assert "2026-11-01 10:00:00 UTC" in listed.output
    released = runner.invoke(app, ["hold", "release", "-c", str(config), "1"])
    assert released.exit_code == 0
    again = runner.invoke(app, ["hold", "release", "-c", str(config), "1"])
    assert again.exit_code == 2
    assert "already released" in again.output
    assert "complaint" not in runner.invoke(app, ["hold", "list", "-c", str(config)]).output


def test_hold_with_bad_range_or_camera_is_refused(config: Path) -> None:
    backwards = runner.invoke(app, [
        "hold", "add", "-c", str(config), "--from", "2026-11-01T11:00:00Z",
        "--to", "2026-11-01T10:00:00Z", "--reason", "x",
    ])
    assert backwards.exit_code == 2
    assert "must end after it starts" in backwards.output
    unknown = runner.invoke(app, [
        "hold", "add", "-c", str(config), "--camera", "roof", "--from", "2026-11-01T10:00:00Z",
        "--to", "2026-11-01T11:00:00Z", "--reason", "x",
    ])
    assert unknown.exit_code == 2
    assert "unknown camera 'roof'" in unknown.output


def test_export_errors_are_clear(config: Path, tmp_path: Path) -> None:
    bad_time = runner.invoke(app, [
        "export", "create", "-c", str(config), "--camera", "door", "--from", "yesterday",
        "--to", "2026-11-01T11:00:00Z", str(tmp_path / "out"),
    ])
    assert bad_time.exit_code == 2
    assert "not an ISO 8601 time" in bad_time.output
    empty = runner.invoke(app, [
        "export", "create", "-c", str(config), "--camera", "door", "--from",
        "2026-11-01T10:00:00", "--to", "2026-11-01T11:00:00Z", str(tmp_path / "out"),
    ])
    assert empty.exit_code == 1
    assert "no recordings of door between 2026-11-01 10:00:00Z" in empty.output
    assert not (tmp_path / "out").exists()
