"""A long folder batch: memory stays flat, a killed batch finishes when re-run, shards equal one run.

    python benchmarks/bench_batch.py [--cases 200] [--kill-after 20]

Writes ``--cases`` small phantom-like MR volumes, trains nothing (a default-architecture generator with
random weights is enough to measure the batch machinery), then:
1. runs ``medsynth translate`` on the folder in a subprocess, sampling its resident memory, and kills it
   with SIGKILL after ``--kill-after`` seconds;
2. re-runs the same command to completion and checks every case is written and no partial file is left;
3. runs ``--shard 0/2`` and ``--shard 1/2`` into another folder and compares with the single run.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import print_header

from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.modelfile import NetworkSpec, save_model
from medsynth.nets.registry import build_network

SHAPE = (48, 56, 48)


def write_model(path: Path) -> Path:
    kwargs = {"spatial_dims": 3, "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "tanh_output": True}
    metadata = {"spatial_dims": 3, "patch_size": [32, 32, 32], "spacing": [3.5] * 3, "flip_axes": [0],
                "mc_dropout": False,
                "directions": {"mr2ct": {"network": "G", "source": MRIntensity().to_json(),
                                         "target": CTIntensity().to_json()}}}
    network = build_network("medsynth.UNetGenerator", kwargs)
    return save_model(path, "pix2pix", {"G": (NetworkSpec("medsynth.UNetGenerator", kwargs), network)}, metadata)


def write_inputs(folder: Path, cases: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    affine = np.diag([3.5, 3.5, 3.5, 1.0])
    for i in range(cases):
        volume = rng.gamma(2.0, 100.0, SHAPE).astype(np.float32)
        volume[8:40, 8:48, 8:40] += 400
        nib.save(nib.Nifti1Image(volume, affine), folder / f"case_{i:04d}.nii.gz")


def translate_command(model: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medsynth", "translate", str(model), str(inputs), str(out), "--device", "cpu",
            *extra]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_sampled(command: list[str], kill_after: float | None, log: Path) -> tuple[list[float], int]:
    """Run ``command``, sampling RSS every 0.5 s; SIGKILL it after ``kill_after`` seconds if given.

    Its stderr goes to ``log``; a run that ends with an error (not the kill) stops the benchmark with it.
    """
    with log.open("w") as stderr:
        samples, code = _sample(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr), kill_after)
    if code not in (0, -signal.SIGKILL):
        raise SystemExit(f"translate failed (exit {code}): {log.read_text().strip()}")
    return samples, code


def _sample(process: subprocess.Popen, kill_after: float | None) -> tuple[list[float], int]:
    samples: list[float] = []
    started = time.monotonic()
    while process.poll() is None:
        try:
            samples.append(rss_mb(process.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        if kill_after is not None and time.monotonic() - started > kill_after:
            process.send_signal(signal.SIGKILL)
        time.sleep(0.5)
    return samples, process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--kill-after", type=float, default=20.0)
    args = parser.parse_args()
    print_header(f"translate batch of {args.cases} volumes {SHAPE}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The model in a folder of its own: translate refuses to write inside a model's (run) folder.
        model = write_model(root / "model" / "model.safetensors")
        inputs, out = root / "in", root / "out"
        write_inputs(inputs, args.cases)
        _, code = run_sampled(translate_command(model, inputs, out), args.kill_after, root / "killed.log")
        done_at_kill = len(list(out.glob("case_*.nii.gz")))
        if code == 0:
            print(f"the batch finished within --kill-after {args.kill_after:.0f} s; give more --cases to test resume")
        else:
            print(f"killed (exit {code}) after {args.kill_after:.0f} s with {done_at_kill} cases written")
        started = time.monotonic()
        samples, code = run_sampled(translate_command(model, inputs, out), None, root / "rerun.log")
        seconds = time.monotonic() - started
        written = len(list(out.glob("case_*.nii.gz")))
        partial = len(list(out.glob(".*partial*")))
        remaining = args.cases - done_at_kill  # per case only over cases the re-run translated (not skipped)
        per_case = f"{seconds / remaining:.2f} s/case" if remaining else "no case left to translate"
        print(f"re-run: exit {code}, {written}/{args.cases} written, {partial} partial files, {seconds:.0f} s, "
              f"{per_case}")
        quarter = max(len(samples) // 4, 1)
        print(f"re-run RSS MiB: first quarter max {max(samples[:quarter]):.0f}, last quarter max "
              f"{max(samples[-quarter:]):.0f}, overall max {max(samples):.0f}  (flat memory: last ≈ first)")
        shards = root / "shards"
        for shard in ("0/2", "1/2"):
            subprocess.run(translate_command(model, inputs, shards, "--shard", shard), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        same = all(np.array_equal(nib.load(f).get_fdata(), nib.load(shards / f.name).get_fdata())
                   for f in sorted(out.glob("case_*.nii.gz")))
        print(f"two shards == single run: {same}")


if __name__ == "__main__":
    main()
