"""Shared by the benchmark scripts: the machine, peak memory, and running one configuration per process."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys

import torch


def machine() -> str:
    """One line naming the machine the figures come from."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(script: str, args: list[str]) -> dict:
    """Run one configuration in a fresh process, so its peak memory is its own; returns its JSON line.

    A configuration that fails stops the benchmark with the last line of its error output.
    """
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no error output)"])[-1]
        raise SystemExit(f"{os.path.basename(script)} {' '.join(args)}: exit {done.returncode}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_header(title: str) -> None:
    print(f"# {title}")
    print(f"# command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"# machine: {machine()}")


def fit_seconds_per_step(trainer, steps: int) -> float:
    """Seconds per step of a medsynth ``Trainer.fit`` (any version): a warm-up, then two fits of different
    lengths, so that what a fit does once (logbook, final checkpoint, model file) cancels out."""
    import time

    def fit(more: int) -> float:
        trainer.config.steps = trainer.step + more
        started = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - started

    fit(2)
    short = max(2, steps // 4)
    return (fit(steps) - fit(short)) / (steps - short)
