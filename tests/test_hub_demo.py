"""`custodes hub demo` end to end, as a user runs it: a fresh folder, one command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_hub_demo_runs_and_every_chain_verifies() -> None:
    # Not under pytest's tmp folder, whose root every pytest run resets to 0700 (as root,
    # the embedded PostgreSQL runs as its own account and must reach its folder).
    folder = Path(tempfile.mkdtemp(prefix="custodes-hub-demo-"))
    try:
        run = subprocess.run(
            [sys.executable, "-m", "custodes", "hub", "demo", "--sites", "5", "--nodes", "0",
             "--seconds", "20", "--web-port", "0", "--data", str(folder)],
            capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "5 sites (0 real nodes" in run.stdout
        ingested = re.search(r"hub ingested (\d+) messages \((\d+) duplicates ignored, "
                             r"(\d+) rejected\)", run.stdout)
        assert ingested is not None, run.stdout
        assert int(ingested.group(1)) > 0
        assert int(ingested.group(3)) == 0
        verify = subprocess.run(
            [sys.executable, "-m", "custodes", "hub", "verify", "--data", str(folder / "hub")],
            capture_output=True, text=True, timeout=300, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
        assert "5 sites, 0 with problems" in verify.stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)
