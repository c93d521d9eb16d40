"""How many CPU threads medsynth may use: the CPUs this process may actually run on, not those the machine has.

A container or a Slurm job is often given fewer CPUs than ``os.cpu_count()`` reports, by CPU affinity
(``taskset``, cgroup cpusets) or by a CFS quota (``docker --cpus``, Kubernetes limits). PyTorch then starts
one OpenMP thread per visible core; threads beyond the share spin against each other and against any
neighbouring job (two trainings on 2 cores, each with 2 threads, ran twelve times slower, not two). The
choice is made before torch starts (its OpenMP pool reads ``OMP_NUM_THREADS`` once), and an explicit
``OMP_NUM_THREADS`` always wins. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """Intra-op threads and why (one line for ``medsynth info`` and run logs)."""

    threads: int
    reason: str


def cpu_quota(cgroup: Path = _CGROUP) -> float | None:
    """CPUs the cgroup's CFS quota allows (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def choose_threads(environ: dict[str, str] | None = None, cgroup: Path = _CGROUP) -> ThreadChoice:
    """The intra-op threads to use: ``OMP_NUM_THREADS`` when set, else the CPUs of this process's affinity
    mask, capped by the cgroup's CPU quota (rounded up, at least 1)."""
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return ThreadChoice(int(given), "OMP_NUM_THREADS is set")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    if quota is not None and math.ceil(quota) < affinity:
        return ThreadChoice(max(1, math.ceil(quota)), f"the cgroup's CPU quota allows {quota:g} of the "
                                                      f"{affinity} CPUs this process may run on")
    seen = os.cpu_count() or affinity
    why = "the CPUs this process may run on" + (f" (of {seen} on the machine)" if seen != affinity else "")
    return ThreadChoice(max(1, affinity), why)


_applied: list[ThreadChoice] = []  # the choice this process made, for reports


def apply_thread_choice() -> ThreadChoice:
    """Set ``OMP_NUM_THREADS`` (and MKL's) to :func:`choose_threads` before torch is imported; returns the choice."""
    choice = choose_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if not os.environ.get(name, "").strip().isdigit():  # unset or empty (libgomp rejects an empty value)
            os.environ[name] = str(choice.threads)
    _applied[:] = [choice]
    return choice


def thread_choice() -> ThreadChoice:
    """The choice :func:`apply_thread_choice` made in this process, else what it would make now."""
    return _applied[0] if _applied else choose_threads()
