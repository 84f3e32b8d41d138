"""Simulated IP cameras: sample videos served over RTSP on loopback, for tests, benchmarks and
`custodes demo`."""

from custodes.sim.media import ensure_sample, prepare_clip
from custodes.sim.rtsp import SimServer
from custodes.sim.runner import run_sim

__all__ = ["SimServer", "ensure_sample", "prepare_clip", "run_sim"]
