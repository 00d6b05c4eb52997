"""Figures of this process the run summary reports, read from the OS: peak memory and time since start."""

from __future__ import annotations

import os
from typing import Optional


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process in MiB (None where the OS does not say)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


def process_age() -> Optional[float]:
    """Seconds since this process started (exec, so interpreter start-up included); Linux only, 10 ms steps."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks since boot) comes after the parenthesised command name.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
