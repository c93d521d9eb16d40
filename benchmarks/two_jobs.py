"""Two trainings (or a training and a translate batch) started together on the same CPUs, against each alone:
does each take about twice as long (a fair share), or far longer (threads spinning against each other)?

    python benchmarks/two_jobs.py DATA [--config examples/pix2pix_real_cpu.yaml] [--steps 600]
        [--threads 2] [--beside translate --cases 12]

Each training runs in its own process with medsynth's own thread choice (``engine/threads.py``: the CPUs
it may use, shared with the other medsynth processes on them); ``--threads N`` sets ``OMP_NUM_THREADS=N``
for both instead, which turns the sharing off — what a user who fixes the threads by hand gets. The figure
is each run's training time (data preparation excluded) over the lone run's. ``--beside translate`` runs a
``translate`` batch of ``--cases`` synthetic 160×192×160 heads (``bench_translate.py``'s default vox2vox) beside
the training instead of a second training; its figure is the batch's wall time (writing the inputs excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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


def one_translate(folder: Path, out: Path) -> None:
    """One translate batch of FOLDER/mr with FOLDER/model, as the CLI starts it; prints its wall seconds as JSON
    (as ``train_s``)."""
    from medsynth.engine.threads import apply_thread_choice

    apply_thread_choice()
    from medsynth.services.translate import TranslateOptions, translate

    started = time.perf_counter()
    translate(folder / "model", folder / "mr", out, TranslateOptions(device="cpu"))
    print(json.dumps({"train_s": time.perf_counter() - started}))


def translate_inputs(folder: Path, cases: int) -> Path:
    """The model and the MR cases of the translate batch, written before any job is timed."""
    from bench_translate import write_inputs, write_model

    write_model(folder / "model" / "model.safetensors", 1.0)
    write_inputs(folder / "mr", cases)
    return folder


def start(args: argparse.Namespace, run: Path, inputs: Path | None = None) -> subprocess.Popen:
    """A training into ``run``, or with ``inputs`` (:func:`translate_inputs`) a translate batch into ``run``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    job = ["--translate-one", str(inputs), str(run)] if inputs else ["--one", str(run)]
    return subprocess.Popen([sys.executable, __file__, str(args.data), "--config", str(args.config), "--steps",
                             str(args.steps), *job], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


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
    parser.add_argument("--beside", choices=("training", "translate"), default="training",
                        help="the second job: another training, or a translate batch")
    parser.add_argument("--cases", type=int, default=12, help="with --beside translate: cases in the batch")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--translate-one", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.data, args.config, args.steps, args.one)
    if args.translate_one:
        return one_translate(*args.translate_one)
    how = f"OMP_NUM_THREADS={args.threads} each" if args.threads else "medsynth's thread choice and sharing"
    second = "a translate batch of " + str(args.cases) + " cases" if args.beside == "translate" else "a training"
    print_header(f"a training ({args.config.name}, {args.steps} steps) and {second}, together vs alone ({how})")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = translate_inputs(Path(tmp) / "translate", args.cases) if args.beside == "translate" else None
        alone = [seconds(start(args, Path(tmp) / "alone0")), seconds(start(args, Path(tmp) / "alone1", inputs))]
        pair = [start(args, Path(tmp) / "pair0"), start(args, Path(tmp) / "pair1", inputs)]
        together = [seconds(p) for p in pair]
    print("| job | time alone (s) | time together (s) | over alone |")
    print("|---|---|---|---|")
    for i, name in enumerate(("training", "translate batch" if inputs else "second training")):
        print(f"| {name} | {alone[i]:.0f} | {together[i]:.0f} | {together[i] / alone[i]:.2f}x |")
    print(json.dumps({"alone_s": alone, "together_s": together,
                      "worst_ratio": max(t / a for t, a in zip(together, alone, strict=True))}))


if __name__ == "__main__":
    main()
