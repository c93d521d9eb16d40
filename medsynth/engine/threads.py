"""How many CPU threads medsynth may use: the CPUs this process may actually run on, not those the machine has.

A container or a Slurm job is often given fewer CPUs than ``os.cpu_count()`` reports, by CPU affinity
(``taskset``, cgroup cpusets) or by a CFS quota (``docker --cpus``, Kubernetes limits). PyTorch then starts
one OpenMP thread per visible core; threads beyond the share spin against each other and against any
neighbouring job (two trainings on 2 cores, each with 2 threads, ran twelve times slower, not two). The
choice is made before torch starts (its OpenMP pool reads ``OMP_NUM_THREADS`` once), and an explicit
``OMP_NUM_THREADS`` always wins. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """Intra-op threads and why (one line for ``medsynth info`` and run logs)."""

    threads: int
    reason: str
    given: bool = False  # OMP_NUM_THREADS was set by the user: kept as it is, never shared out


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
        return ThreadChoice(int(given), "OMP_NUM_THREADS is set", given=True)
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


_CLAIMS = Path(tempfile.gettempdir()) / "medsynth-cpu-share"


class CpuShare:
    """Threads shared fairly with the other medsynth processes on the same CPUs.

    Each process claims its CPUs with a file ``<pid>`` (the CPU numbers it may run on) in ``directory``
    (default ``$TMPDIR/medsynth-cpu-share``); :meth:`threads` is its CPUs divided by the live claims that
    overlap them (at least 1). Trainings and translate/attribute batches on the CPU claim; two started on 2
    cores then run with one thread each instead of two spinning against two (OpenMP's
    busy-waiting threads lose most of their time to a neighbour that holds the core: 12x slower, not 2x;
    docs/performance.md), and a job left alone takes both cores back at its next :meth:`refresh`.
    A claim of a process that died without removing it is ignored (its pid no longer runs).
    """

    def __init__(self, cpus: frozenset[int] | None = None, directory: Path | None = None, every_s: float = 5.0
                 ) -> None:
        self.cpus = cpus if cpus is not None else _affinity()
        self.directory, self.every_s = directory or _CLAIMS, every_s
        self._claim = self.directory / str(os.getpid())
        self._checked = -math.inf

    def __enter__(self) -> CpuShare:
        with contextlib.suppress(OSError):  # no writable temp folder: no sharing, nothing else changes
            self.directory.mkdir(parents=True, exist_ok=True)
            self._claim.write_text(" ".join(map(str, sorted(self.cpus))))
        return self

    def __exit__(self, *exc: object) -> None:
        self._claim.unlink(missing_ok=True)

    def neighbours(self) -> int:
        """Live processes (this one included) whose claimed CPUs overlap this one's."""
        live = 1
        for claim in self.directory.glob("[0-9]*") if self.directory.is_dir() else ():
            if claim == self._claim or not _running(int(claim.name)):
                continue
            with contextlib.suppress(OSError, ValueError):
                if self.cpus & {int(c) for c in claim.read_text().split()}:
                    live += 1
        return live

    def threads(self, limit: int) -> int:
        """This process's fair share of threads, at most ``limit`` (the choice made at start)."""
        return max(1, min(limit, len(self.cpus) // self.neighbours()))

    def refresh(self, limit: int, current: int, now: float) -> int | None:
        """The share when it differs from ``current`` and ``every_s`` seconds have passed, else None."""
        if now - self._checked < self.every_s:
            return None
        self._checked = now
        share = self.threads(limit)
        return share if share != current else None


def cpu_share() -> CpuShare | None:
    """A :class:`CpuShare` for this process, or None when the user fixed the threads (``OMP_NUM_THREADS``)."""
    return None if thread_choice().given else CpuShare()


def _affinity() -> frozenset[int]:
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
