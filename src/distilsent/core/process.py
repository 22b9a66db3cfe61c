"""Worker processes that do not outlive their parent: one mechanism for batch and serve workers."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(poll_seconds: float = 1.0) -> None:
    """Make this process end when the process that started it dies, even by ``kill -9``.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a
    daemon thread polls the parent id and exits when the process has been re-parented. Either way a
    parent killed before this call is noticed at once. Linux ties the signal to the *thread* that
    started the process, so call this only in processes started from a long-lived thread (the
    batch pool and uvicorn's supervisor start theirs from the main thread).
    """
    parent = os.getppid()
    armed = False
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    if armed:
        return

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="distilsent-parent-watch", daemon=True).start()
