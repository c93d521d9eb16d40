"""Preemption: SIGKILL ``medsynth train`` at random moments, rerun the identical command, check the model.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/kill_resume.py [--trials 20] [--seed 0] [--steps 30]

A scheduler kills a job without warning and requeues the *same* command, so every run here is one
command line that includes ``--resume``. First that command runs uninterrupted (the reference model
and its wall time T, start-up included). Then, per trial, in a new run folder: start it, SIGKILL it
after a random time drawn uniformly from [0, T] (anywhere from Python's start-up through settings,
checkpoints, validation and previews to writing the model file), and rerun the identical command
until it exits 0. A trial passes when the command ends with exit 0 and a model file whose weights
equal the reference's (resume is exact; within 1e-5) and which translates an unseen MR to a synthetic
CT whose MAE equals the reference model's within 1 HU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import print_header

from medsynth.modelfile import load_model
from medsynth.phantom.kinds import write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate

TINY = {"model": {"channels": [8, 16, 32], "disc_channels": 8, "disc_layers": 2, "val_cases": 1},
        "train": {"batch_size": 1, "ckpt_every": 5, "val_every": 10, "preview_every": 10, "log_every": 1}}


def command(data: Path, run: Path, config: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "medsynth", "train", "pix2pix", str(data), "--out", str(run), "--config",
            str(config), "--patch-size", "16", "--steps", str(steps), "--device", "cpu", "--resume"]


def run_to_end(argv: list[str], env: dict[str, str], attempts: int = 3) -> int:
    """Run ``argv`` until it exits 0 (at most ``attempts`` times); returns how many runs it took."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return attempt
        print(f"    rerun exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}", flush=True)
    raise SystemExit(f"the identical command failed {attempts} times in a row")


def state_at_kill(run: Path) -> str:
    """What the killed attempt had left: nothing, settings only, a checkpoint (its step) or a model."""
    if (run / "model.safetensors").is_file():
        return "model written"
    checkpoint = run / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        return f"checkpoint at step {int(torch.load(checkpoint, weights_only=True)['step'])}"
    return "settings only" if (run / "config.yaml").is_file() else "nothing"


def mae(run: Path, test: Path, out: Path) -> float:
    translate(run, test / "mr", out, TranslateOptions(device="cpu"))
    return float(evaluate_folders(out, test / "ct", test / "mask").summary()["mae"].mean)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print_header("kill_resume: SIGKILL at random moments, then the identical command with --resume")
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantom("paired", root / "data", cases=3, shape=(32, 32, 32), spacing=6.0, seed=0)
        write_phantom("paired", root / "test", cases=1, shape=(32, 32, 32), spacing=6.0, seed=99)
        config = root / "tiny.yaml"
        config.write_text(yaml.safe_dump(TINY))
        started = time.perf_counter()
        run_to_end(command(root / "data", root / "reference", config, args.steps), env, attempts=1)
        total = time.perf_counter() - started
        reference = load_model(root / "reference").weights["G"]
        reference_mae = mae(root / "reference", root / "test", root / "reference_sct")
        print(f"reference: {args.steps} steps in {total:.1f} s (T, start-up included); MAE {reference_mae:.1f} HU",
              flush=True)
        passed = 0
        for trial in range(args.trials):
            run = root / f"trial_{trial:02d}"
            argv = command(root / "data", run, config, args.steps)
            killed = False
            while not killed:  # a draw later than this attempt's own finish kills nothing: draw again
                shutil.rmtree(run, ignore_errors=True)
                moment = rng.uniform(0.0, total)
                process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(moment)
                killed = process.poll() is None
                if killed:
                    process.send_signal(signal.SIGKILL)
                process.wait()
            left = state_at_kill(run)
            runs = run_to_end(argv, env)
            difference = max_difference(reference, load_model(run).weights["G"])
            trial_mae = mae(run, root / "test", root / f"sct_{trial:02d}")
            ok = difference <= 1e-5 and abs(trial_mae - reference_mae) <= 1.0
            passed += ok
            print(json.dumps({"trial": trial, "kill_after_s": round(moment, 2), "left": left,
                              "reruns": runs, "max_weight_difference": difference, "mae": round(trial_mae, 2),
                              "ok": ok}), flush=True)
        print(f"result: {passed}/{args.trials} killed runs ended, after the identical command with --resume, "
              f"with a finished model equal to the uninterrupted one")
        if passed != args.trials:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
