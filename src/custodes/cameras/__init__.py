"""Cameras on the network: ONVIF discovery and probes, and the fleet risk audit.

The public API for other packages (web UI, CLI):
- `custodes.cameras.probe.probe(url, username, password) -> CameraProbe` (async)
- `custodes.cameras.discovery.discover(timeout, ...) -> list[DiscoveredDevice]` (blocking)
- `custodes.cameras.models`: the typed results
- `custodes.cameras.risk` and `custodes.cameras.audit`: the risk data and the fleet audit
"""
