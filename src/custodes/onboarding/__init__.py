"""Cameras installed, changed and removed while the node runs (the camera page)."""
