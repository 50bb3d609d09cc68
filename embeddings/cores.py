"""How many cores this process may run on: the default thread count of scans, encoders and
the bot's search workers."""

from __future__ import annotations

import os


def cores() -> int:
    """Cores this process may run on: its CPU affinity where the system has one (a container
    limited to 2 of 64 cores gets 2), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
