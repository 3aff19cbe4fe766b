"""Crash points for the crash-recovery tests.

``FOOTPRINT_CRASH_AT=<point>[:<n>]`` makes the process kill itself with SIGKILL (as ``kill -9``
would) the n-th time (default first) it reaches ``crashpoint(<point>)``. Unset, a crash point costs
one dictionary look-up. The points are named where they are called (``grep crashpoint``).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def crashpoint(point: str) -> None:
    spec = os.environ.get("FOOTPRINT_CRASH_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
