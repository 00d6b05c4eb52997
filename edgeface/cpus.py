"""How many CPUs this process may use: the default for worker pools and benchmark thread counts."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, a container's cpuset), at least 1.

    ``os.cpu_count()`` counts the machine's CPUs, so a process pinned to 2 of 64 would start 64 workers or
    benchmark 64 threads on 2 cores.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1
