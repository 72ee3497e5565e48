"""What the benchmarks read off the machine: memory peaks, CPU use by everyone, CPU flags.

Shared by the benchmark scripts (``from _machine import ...``: each script's own
folder is on ``sys.path`` when it runs as ``python bench/<script>.py``).
"""
from __future__ import annotations

import os
import resource
import time


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_peak_since_reset() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_busy_s() -> float:
    """Seconds of CPU time all processes have used (from /proc/stat), summed over cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def own_children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(limit_s: float, share: float = 0.1) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``share`` of the cores."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        b0, w0 = machine_busy_s(), time.monotonic()
        time.sleep(2.0)
        if (machine_busy_s() - b0) / ((time.monotonic() - w0) * (os.cpu_count() or 1)) < share:
            break
    return time.monotonic() - t0


def cpu_flags(wanted: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f", "avx2")
              ) -> str:
    """Which of ``wanted`` the CPU has ("none", or "unknown" without /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(x for x in wanted if x in flags) or "none"
