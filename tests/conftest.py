"""Shared test set-up.

Tests that need something from outside the repository (the third-party data in
../shared/data, a service) skip when it is absent on a developer's machine but fail in CI,
where .ci/run provides everything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from custodes.vision.embedding import FaceEmbedder

if TYPE_CHECKING:
    from people import People

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip locally, fail in CI, when a test's outside dependency is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require(SHARED_DATA.is_dir(), f"third-party test data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated camera-like clip (H.264, 1 s GOP), shared by the whole session."""
    from custodes.sim import ensure_sample  # noqa: PLC0415 - only tests that record need it

    return ensure_sample(tmp_path_factory.mktemp("samples"), width=320, height=240, fps=15,
                         bitrate_kbps=300, codec="h264", seconds=4)


@pytest.fixture(scope="session")
def embedder() -> FaceEmbedder:
    """One face network for the whole run: loading it costs a second or two."""
    return FaceEmbedder("onnx", threads=1)


@pytest.fixture(scope="session")
def people(shared_data: Path, embedder: FaceEmbedder) -> People:
    from people import load_people  # noqa: PLC0415 - people.py imports require from here

    return load_people(shared_data, embedder)
