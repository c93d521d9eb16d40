"""Two trainings started together on the same CPUs, against one alone: does each take about twice as long
(a fair share), or far longer (threads spinning against each other)?

    python benchmarks/two_jobs.py DATA [--config examples/pix2pix_real_cpu.yaml] [--steps 600]
        [--threads 2]

Each training runs in its own process with medsynth's own thread choice (``engine/threads.py``: the CPUs
it may use, shared with the other medsynth processes on them); ``--threads N`` sets ``OMP_NUM_THREADS=N``
for both instead, which turns the sharing off — what a user who fixes the threads by hand gets. The figure
is each run's training time (data preparation excluded) over the lone run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import print_header


def one(data: Path, config: Path, steps: int, run: Path) -> None:
    """One training, as the CLI starts it; prints its training seconds as JSON."""
    from medsynth.engine.threads import apply_thread_choice

    apply_thread_choice()  # before torch is imported, as medsynth's CLI does
    from medsynth.training import train

    result = train("pix2pix", data, run, {"steps": steps, "val_every": 0, "ckpt_every": 10**6,
                                          "preview_every": 10**6}, {"val_cases": 0}, config)
    print(json.dumps({"train_s": result.seconds}))


def start(data: Path, config: Path, steps: int, run: Path, threads: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, __file__, str(data), "--config", str(config), "--steps", str(steps),
                             "--one", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def seconds(process: subprocess.Popen) -> float:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a training failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])["train_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--config", type=Path, default=Path("examples/pix2pix_real_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both runs (turns sharing off)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.data, args.config, args.steps, args.one)
    how = f"OMP_NUM_THREADS={args.threads} each" if args.threads else "medsynth's thread choice and sharing"
    print_header(f"two trainings together vs one alone ({args.config.name}, {args.steps} steps, {how})")
    with tempfile.TemporaryDirectory() as tmp:
        alone = seconds(start(args.data, args.config, args.steps, Path(tmp) / "alone", args.threads))
        pair = [start(args.data, args.config, args.steps, Path(tmp) / f"pair{i}", args.threads) for i in (0, 1)]
        together = [seconds(p) for p in pair]
    print("| run | training time (s) | over one alone |")
    print("|---|---|---|")
    print(f"| alone | {alone:.0f} | 1.00x |")
    for i, value in enumerate(together):
        print(f"| together, run {i + 1} | {value:.0f} | {value / alone:.2f}x |")
    print(json.dumps({"alone_s": alone, "together_s": together, "worst_ratio": max(together) / alone}))


if __name__ == "__main__":
    main()
