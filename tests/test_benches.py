"""Every bench in bench/ runs its --quick smoke run, so that none can rot unseen.

bench/analytics.py once polled an API that had started to require sign-in, took every 401 for
"not up yet" and measured nothing for months. A bench is only run by hand, before a decision, so
breakage shows up exactly when its figures are needed. Here each one runs as a user would run
it (`python bench/X.py --quick`, the installed package, the shared data) and must exit 0 and
print the lines its report promises (its table header, its comparison rows): a bench that exits
0 after printing nothing useful fails too. Quick figures are not the benchmark's and are not
checked.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Bench:
    script: str
    promises: tuple[str, ...]  # text its report always prints, whatever it measured
    # A guard against a hung run (a node that never stops), not a speed check: several times
    # what --quick takes on the 2-core CI box, which other jobs share.
    timeout: float = 300
    data: bool = True  # reads ../shared/data


BENCHES = (
    Bench("analytics.py", (
        "load average",
        "analytics settings of every camera (defaults)",
        "== Live: 2 cameras",
        "cam01 ",
        "fps per camera: slowest median",
        "CPU-s/camera-min analysis (workers+node)",
        "face tracks stored (all cameras)",
        "real time for all 2 cameras",
        "== Offline, one pinned core",
        "faces naive/ours",
        "total ",
        "offline comparison running",
    )),
    Bench("detector_speed.py", (
        "speed: a 1280x720 frame",
        "240 lines  as shipped",
        "480 lines  node",
        "WIDER FACE recall:",
        "720p frame, coarse (240 lines)",
        "snapshot (720 lines)",
    )),
    Bench("embed_speed.py", (
        "| backend | load s | ms/face batch 1 | ms/face batch 8 |",
        "| dlib-bin (reference) |",
        "| onnxruntime, 1 thread |",
    )),
    Bench("face_search.py", (
        "top10 med ms",
        "brute force ",
        "hnsw ",
        "cache build for 5,000 sealed descriptors",
    ), data=False),
    Bench("faces_accuracy.py", (
        "# Face detection and verification",
        "## 1. Pair verification",
        "## 2. WIDER FACE",
        "## 3. Hand-annotated crowd photos",
    )),
    Bench("hub.py", (
        "| ingester | messages | seconds | msg/s | headroom over the city |",
        "| batched (ours) |",
        "| naive (one INSERT + commit per message) |",
        "city load:",
        "hub CPU per 1000 cameras:",
        "end to end delay (site write -> hub row)",
        "catch-up: hub current",
    ), timeout=600, data=False),
    Bench("hub_overview.py", (
        "load average at start",
        "| page | baseline median ms | baseline p95 ms | ours median ms | ours p95 ms |",
        "| overview (/) |",
        "| site page |",
        "| events, all sites |",
        "goal: overview <= 300 ms",
        "same coverage figures from the sums as from every minute: yes",
    ), data=False),
    Bench("identification.py", (
        "# Identification:",
        "## FPIR / FNIR per threshold",
        "## Tuned vs held-out",
    )),
    Bench("live_grid.py", (
        "9 cameras recorded and analysed",
        "before: sampled",
        "after: newest",
        "pictures/s per tile slowest",
        "| live picture process | pictures/s per tile: slowest / median | age p50 | age p90 |",
        "goal: >= 2 pictures/s on every tile, age p90 <= 1 s",
    )),
    Bench("record_cost.py", (
        "bare ffmpeg",
        "recording only",
        "default config",
        "segments missing",
        "seconds from SIGINT to exit",
        "/ bare ffmpeg CPU (median windows)",
        "simulator (not included)",
        # The node's own figures, read signed in: an error here once hid behind exit 0.
        "default config: analysis at the end (medians over online cameras): online",
    ), timeout=600, data=False),
    Bench("redaction.py", (
        "x real time",
        "first viewer (one pass, streamed)",
        "export from kept boxes",
        "720p segment:",
        "ground truth:",
        "720p video frame (searched at 240 lines)",
        "video ground truth:",
        "old HOG + Haar detector, 640x360",
        "Hamilton audience",
    )),
)


def test_every_bench_has_a_smoke_run() -> None:
    """A new bench without an entry here would escape the smoke runs: it fails instead."""
    on_disk = sorted(path.name for path in BENCH.glob("*.py"))
    assert on_disk == sorted(bench.script for bench in BENCHES)


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES, ids=lambda bench: bench.script)
def test_quick_run_prints_its_report(bench: Bench, request: pytest.FixtureRequest) -> None:
    if bench.data:
        request.getfixturevalue("shared_data")  # skips locally, fails in CI, when absent
    done = subprocess.run([sys.executable, str(BENCH / bench.script), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=bench.timeout, check=False)
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"{bench.script} --quick exited {done.returncode}:\n{tail}"
    missing = [line for line in bench.promises if line not in done.stdout]
    assert not missing, f"{bench.script} --quick did not print {missing}:\n{tail}"


# -- how bench/analytics.py talks to the node ----------------------------------------------------


@pytest.fixture(scope="module")
def analytics_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_analytics", BENCH / "analytics.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Refuses(BaseHTTPRequestHandler):
    """A node that wants a sign-in the client does not have."""

    def do_GET(self) -> None:
        body = b'{"detail": "sign in first"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass  # keep pytest's output to the test's own


@pytest.fixture
def refusing_node() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_refusal_stops_the_bench_with_status_and_body(analytics_bench: ModuleType,
                                                        refusing_node: int) -> None:
    """The 401 that once read as "not up yet" must end the run, saying why."""
    api = analytics_bench.NodeApi(refusing_node)
    with pytest.raises(SystemExit, match=r"HTTP 401 .*sign in first"):
        api.status()


def test_only_a_refused_connection_means_not_up(analytics_bench: ModuleType) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = analytics_bench.NodeApi(port)
    with pytest.raises(analytics_bench.NotUp):
        api.status()


# -- bench/analytics.py --baseline: the tree asked for, or a refusal ---------------------------


def old_tree(root: Path) -> Path:
    """A checkout with the src layout whose `custodes` is a stub (only its path matters)."""
    package = root / "src" / "custodes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return root


def test_a_baseline_tree_is_imported_from_its_src_folder(analytics_bench: ModuleType,
                                                         tmp_path: Path) -> None:
    """`--baseline ROOT` once put ROOT on PYTHONPATH; the package is in ROOT/src, so the venv's
    editable install of this tree answered and the "baseline" was this tree, unsaid."""
    tree = old_tree(tmp_path / "old")
    source = analytics_bench.baseline_path(tree)
    assert source == (tree / "src").resolve()
    assert analytics_bench.baseline_path(tree / "src") == source  # TREE/src given: the same
    imported = analytics_bench.imported_package(source)
    assert imported == str(source / "custodes")
    analytics_bench.check_imported(source, imported, "test")  # the one asked for: accepted
    assert analytics_bench.checked_baseline(tree) == source  # what the bench checks first


def test_a_baseline_that_imports_another_tree_is_refused(analytics_bench: ModuleType,
                                                         tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no custodes package"):
        analytics_bench.baseline_path(tmp_path)  # neither TREE/src nor TREE holds one
    # What the old option did: a folder without the package on PYTHONPATH imports the venv's
    # custodes (this tree's, installed), not the folder's.
    imported = analytics_bench.imported_package(tmp_path)
    assert Path(imported).name == "custodes"
    assert Path(imported).parent != tmp_path.resolve()
    with pytest.raises(SystemExit) as refused:
        analytics_bench.check_imported(tmp_path, imported, "test")
    assert refused.value.code == 2
    # A baseline run's figures that say they came from another package are refused too.
    tree = old_tree(tmp_path / "old")
    with pytest.raises(SystemExit):
        analytics_bench.check_imported(analytics_bench.baseline_path(tree), imported,
                                       "the baseline run")
