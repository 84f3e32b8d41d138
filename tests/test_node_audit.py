"""What a node writes to the audit log by itself: starts, stops and configuration changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from custodes.app import Node
from custodes.audit.verify import verify_store
from custodes.config import Config, parse_config


def config_of(root: Path, purpose: str, extra_camera: bool = False) -> Config:
    cameras: dict[str, Any] = {
        "door": {"site": "s", "location": "entrance", "purpose": purpose, "enabled": False,
                 "main_url": "rtsp://viewer:s3cret@127.0.0.1:9/door"},
    }
    if extra_camera:
        cameras["yard"] = {"site": "s", "location": "exterior", "purpose": "Yard gate",
                           "enabled": False, "main_url": "rtsp://127.0.0.1:9/yard"}
    text = json.dumps({"sites": {"s": {"name": "S"}}, "cameras": cameras,
                       "storage": {"path": str(root / "var")},
                       "retention": {"interval_seconds": 1}})
    return parse_config(text)


def run_once(config: Config) -> list[tuple[str, dict[str, Any]]]:
    node = Node(config)
    node.start(web=False)
    node.stop()
    node.store.open()
    try:
        # The node signs its head at start and stop, and keeps each signature beside its keys.
        report = verify_store(node.store, node.keys.public_pem, anchors=node.audit.anchors)
        assert report.ok, [str(p) for p in report.problems]
        assert report.unsigned == 0
        assert report.anchored_through == report.last_seq
        with node.store.read() as conn:
            rows = conn.exec_driver_sql("SELECT action, detail FROM audit_log ORDER BY seq")
            return [(action, json.loads(detail)) for action, detail in rows]
    finally:
        node.store.close()


def test_a_changed_configuration_is_audited_at_the_start_that_applies_it(
    tmp_path: Path,
) -> None:
    first = run_once(config_of(tmp_path, "Front door"))
    assert [a for a, _ in first] == ["profile.pin", "node.start", "user.add", "node.stop"]
    assert "s3cret" not in json.dumps(first)

    again = run_once(config_of(tmp_path, "Front door"))
    assert [a for a, _ in again][4:] == ["node.start", "node.stop"]  # nothing changed

    changed = run_once(config_of(tmp_path, "Front door and hall", extra_camera=True))
    entries = changed[6:]
    assert [a for a, _ in entries] == ["config.change", "node.start", "node.stop"]
    assert entries[0][1] == {"changed": ["cameras.door"], "added": ["cameras.yard"],
                             "removed": []}
