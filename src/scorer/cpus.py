"""How many CPUs this process may run on (the thread budget and MMS's Netty threads)."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity / container cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
