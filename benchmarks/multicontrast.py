"""T1+T2 vox2vox against T1 alone, same data, steps and seed, scored on unseen phantom heads.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/multicontrast.py OUT [--steps 1000] [--cases 8]
        [--shape 48 56 48] [--spacing 3.5] [--config examples/pix2pix_cpu.yaml]

Writes OUT/train (T1 as mr/<case>_0000, T2 as _0001), OUT/train_t1 (the same heads, T1 only), OUT/test
and one run per arm; prints the SynthRAD2023 metrics of each arm on the test heads, inside the body.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import print_header

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "pix2pix_cpu.yaml"


def medsynth(*args: object) -> str:
    command = [sys.executable, "-m", "medsynth", *(str(a) for a in args)]
    print("$ medsynth " + " ".join(str(a) for a in args), flush=True)
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def t1_only(source: Path, target: Path) -> Path:
    """The same heads with channel 0000 (T1) alone, named as single-contrast files."""
    for folder in ("ct", "mask"):
        shutil.copytree(source / folder, target / folder)
    (target / "mr").mkdir(parents=True)
    for path in sorted((source / "mr").glob("*_0000.nii.gz")):
        shutil.copy(path, target / "mr" / path.name.replace("_0000", ""))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 56, 48))  # the demo's heads
    parser.add_argument("--spacing", type=float, default=3.5)
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    print_header("T1+T2 vs T1 vox2vox on the phantom")
    out = args.out
    geometry = ("--shape", *args.shape, "--spacing", args.spacing)
    if not (out / "train_t1").is_dir():
        medsynth("phantom", "paired", out / "train", "--cases", args.cases, "--t2", "--seed", 0, *geometry)
        medsynth("phantom", "paired", out / "test", "--cases", 3, "--t2", "--seed", 1, *geometry)
        t1_only(out / "train", out / "train_t1")
        t1_only(out / "test", out / "test_t1")
    arms = {"T1+T2": (out / "train", out / "test" / "mr"), "T1": (out / "train_t1", out / "test_t1" / "mr")}
    for name, (data, test_mr) in arms.items():
        run = out / f"run_{name.replace('+', '')}"
        started = time.perf_counter()
        if not (run / "model.safetensors").is_file():  # a rerun after an interruption keeps finished arms
            medsynth("train", "pix2pix", data, "--out", run, "--config", args.config, "--steps", args.steps,
                     "--val-every", 0, "--seed", 0)
        minutes = (time.perf_counter() - started) / 60  # 0 for an arm trained by an earlier run
        medsynth("translate", run, test_mr, out / f"sct_{name.replace('+', '')}", "--device", "cpu")
        table = medsynth("evaluate", out / f"sct_{name.replace('+', '')}", out / "test" / "ct",
                         "--mask", out / "test" / "mask", "--json", out / f"metrics_{name.replace('+', '')}.json")
        print(f"## {name}: trained {args.steps} steps in {minutes:.1f} min\n{table}", flush=True)


if __name__ == "__main__":
    main()
