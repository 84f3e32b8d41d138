"""Child processes that must not outlive the recorder."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies, even by SIGKILL (Linux).

    An orphaned ffmpeg or analysis process would otherwise go on writing and analysing while
    a restarted recorder repairs and restarts the same work. The signal follows the thread
    that started the process, which must outlive it (ours wait for their children).
    """
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0


def backoff(failures: int) -> float:
    """Seconds to wait before the next try after ``failures`` failures in a row: 1, 2, 4 ...
    up to 60. A dead camera or a crashing worker is retried promptly, then without spinning."""
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** max(failures - 1, 0)))
