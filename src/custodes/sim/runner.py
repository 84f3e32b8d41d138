"""`custodes sim`: N simulated cameras until stopped, steerable over stdin for outage drills."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from custodes.sim.digest import AuthScheme
from custodes.sim.media import Codec, ensure_sample
from custodes.sim.onvif import OnvifIdentity, OnvifSim, SimProfile
from custodes.sim.rtsp import SimServer

log = logging.getLogger(__name__)

PASSWORD_ENV = "CUSTODES_SIM_PASSWORD"  # noqa: S105 - a variable's name


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What makes the simulated cameras look like real ones: credentials and ONVIF."""

    auth: AuthScheme | None = None  # None: streams play without credentials
    username: str = "admin"
    password: str | None = None  # None with `auth`: taken from $CUSTODES_SIM_PASSWORD or made up
    onvif: OnvifIdentity | None = None  # an ONVIF device per camera, with a sub stream
    discovery_port: int = 3702  # WS-Discovery (0: any free port)


def run_sim(
    cache_dir: Path,
    cameras: int,
    *,
    width: int,
    height: int,
    fps: int,
    bitrate_kbps: int,
    codec: str,
    base_port: int,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
    options: SimOptions | None = None,
) -> None:
    """Serve cam01..camNN on base_port.. until `stop` is set or SIGINT/SIGTERM arrives.

    Prints `NAME URL` per camera on stdout once all listen. When stdin is a pipe it reads
    `stop NAME` / `start NAME` lines and answers `ok` (or `error: ...`) on stdout. With
    `options`, it also prints `credentials USER PASSWORD`, `NAME onvif URL` per camera and
    `discovery HOST:PORT`.
    """
    if codec not in ("h264", "h265"):
        raise ValueError(f"codec must be 'h264' or 'h265', not {codec!r}")
    if not 1 <= cameras <= 999:
        raise ValueError("cameras must be between 1 and 999")
    checked_codec: Codec = "h264" if codec == "h264" else "h265"
    stop = stop or threading.Event()
    sample = ensure_sample(
        cache_dir,
        width=width,
        height=height,
        fps=fps,
        bitrate_kbps=bitrate_kbps,
        codec=checked_codec,
    )
    width_digits = max(2, len(str(cameras)))
    options = options or SimOptions()
    password = options.password
    if options.auth is not None and password is None:
        password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(9)
    user = options.username if options.auth is not None else None
    auth = options.auth or AuthScheme.BASIC
    onvif = OnvifSim(host, discovery_port=options.discovery_port) if options.onvif else None
    with SimServer(host) as server, _stop_on_signals(stop), contextlib.ExitStack() as stack:
        names = [f"cam{index + 1:0{width_digits}d}" for index in range(cameras)]
        for index, name in enumerate(names):
            # Base port 0: every camera on a free port of its own, not 0, 1, 2...
            port = base_port + index if base_port else 0
            server.add_camera(name, sample, port=port, username=user,
                              password=password if user else None, auth=auth)
        for name, url in server.urls.items():
            print(f"{name} {url}", flush=True)
        if user is not None:
            print(f"credentials {user} {password}", flush=True)
        if onvif is not None and options.onvif is not None:
            stack.enter_context(onvif)
            for index, name in enumerate(names):
                # The sub stream is the same sample on a port of its own (a real camera's is
                # smaller); what matters to a client is that ONVIF names two streams.
                sub = server.add_camera(f"{name}-sub", sample, username=user,
                                        password=password if user else None, auth=auth)
                clip = server.clip(name)
                profiles = [
                    SimProfile(token, uri, clip.codec, clip.width, clip.height, round(clip.fps))
                    for token, uri in (("main", server.urls[name]), ("sub", sub))
                ]
                identity = dataclasses.replace(
                    options.onvif, name=name, serial=f"{options.onvif.serial}-{index + 1}")
                device = onvif.add_device(identity, profiles, username=user,
                                          password=password if user else None)
                print(f"{name} onvif {device.url}", flush=True)
            print(f"discovery {host}:{onvif.discovery_port}", flush=True)
        if _is_pipe(sys.stdin):
            threading.Thread(
                target=_serve_commands,
                args=(server, sys.stdin, sys.stdout),
                daemon=True,
                name="custodes-sim-stdin",
            ).start()
        while not stop.wait(0.5):
            pass


def _serve_commands(server: SimServer, commands: TextIO, answers: TextIO) -> None:
    # EOF only ends the command channel; the cameras run until told to stop.
    for line in commands:
        if line.strip():
            print(_command(server, line.split()), file=answers, flush=True)


def _command(server: SimServer, words: list[str]) -> str:
    if len(words) != 2 or words[0] not in ("stop", "start"):
        return "error: expected 'stop NAME' or 'start NAME'"
    action = server.stop_camera if words[0] == "stop" else server.start_camera
    try:
        action(words[1])
    except KeyError:
        return f"error: no camera named {words[1]}"
    except OSError as exc:  # start: the port was taken while the camera was down
        return f"error: {exc}"
    return "ok"


def _is_pipe(stream: TextIO) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False  # pytest's capture, closed stdin and the like


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Let SIGINT/SIGTERM set `stop`, restoring the old handlers on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; the caller owns `stop` then
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the simulator", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
