"""Real nodes for the hub demo and tests: a `custodes.app.Node` recording simulated cameras
(RTSP on loopback, ffmpeg) with an ``uplink`` section, exactly as a school's node would run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from custodes.app import Node
from custodes.config import load_config
from custodes.sim import SimServer, ensure_sample


@dataclass
class RealSite:
    node: Node
    sim: SimServer

    def stop(self) -> None:
        self.node.stop_event.set()
        self.node.stop()
        self.sim.stop()


def node_config(folder: Path, name: str, cameras: dict[str, str], urls: list[str],
                password: str, *, ca: str | None = None) -> dict[str, object]:
    return {
        "profile": "school",
        "node": {"name": name},
        "sites": {name: {"name": f"School {name}"}},
        "cameras": {cam: {"site": name, "location": "corridor",
                          "purpose": "Demonstration: simulated camera", "main_url": url,
                          "record": {"segment_seconds": 4}}
                    for cam, url in cameras.items()},
        "storage": {"path": str(folder / "storage"), "quota": "2GB"},
        "security": {"key_dir": str(folder / "keys")},
        "server": {"host": "127.0.0.1", "port": 0},
        "uplink": {"site": name, "urls": urls, "password": password, "health_seconds": 2,
                   **({"ca": ca} if ca is not None else {})},
    }


def start_real_node(folder: Path, name: str, urls: list[str], password: str, *,
                    cameras: int = 2, web: bool = False, ca: str | None = None) -> RealSite:
    folder.mkdir(parents=True, exist_ok=True)
    sample = ensure_sample(folder / "samples", width=320, height=180, fps=10,
                           bitrate_kbps=300, seconds=4)
    sim = SimServer()
    sim.start()
    try:
        cams = {f"cam{i:02d}": sim.add_camera(f"cam{i:02d}", sample)
                for i in range(1, cameras + 1)}
        path = folder / "node.yaml"
        # The demo writes the site's credential into its config: a file only its owner reads
        # (a deployment gives it as ${CUSTODES_UPLINK_PASSWORD}).
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(node_config(folder, name, cams, urls, password, ca=ca)))
        node = Node(load_config(path), config_path=path)
        node.start(web=web)
    except BaseException:
        sim.stop()
        raise
    return RealSite(node, sim)
