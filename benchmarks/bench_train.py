"""vox2vox training step time and peak memory for 64³/96³/128³ patches, and loader throughput.

    python benchmarks/bench_train.py [--steps 4] [--patches 64 96 128]

Each patch size runs in its own process (peak memory is per process). The loader figure is how many
training samples per second ``Pix2Pix.sample`` produces in one process, against how many a training
step consumes per second (batch size / step time): the ratio says whether data loading can keep up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, print_header, run_isolated

from medsynth.engine.config import TrainConfig
from medsynth.engine.runtime import make_runtime
from medsynth.engine.trainer import Trainer
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig
from medsynth.phantom.kinds import write_phantom

PHANTOM = {"cases": 2, "shape": (144, 160, 144), "spacing": 1.25}


def loader_rate(family: Pix2Pix, samples: int = 20) -> float:
    started = time.perf_counter()
    for index in range(samples):
        family.sample(index)
    return samples / (time.perf_counter() - started)


def one(patch: int, steps: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_phantom("paired", data, seed=0, **PHANTOM)
        family = Pix2Pix(Pix2PixConfig(patch_size=(patch,) * 3, val_cases=0), data)
        config = TrainConfig(steps=steps + 1, batch_size=batch, val_every=0, ckpt_every=10_000,
                             preview_every=10_000, device="cpu", log_every=10_000)
        trainer = Trainer(family, config, Path(tmp) / "run", make_runtime("cpu", False))
        trainer.config.steps = 1
        trainer.fit()  # warm-up step
        trainer.config.steps = steps + 1
        started = time.perf_counter()
        trainer.fit()
        step_seconds = (time.perf_counter() - started) / steps
        rate = loader_rate(family)
    print(json.dumps({"step_s": step_seconds, "peak_mb": peak_rss_mb(), "samples_per_s": rate,
                      "consumed_per_s": batch / step_seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patches", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.steps, args.batch_size)
    print_header(f"vox2vox training (default networks, batch {args.batch_size}, fp32 on CPU)")
    print("patch  s/step  peak MiB  loader samples/s  step consumes/s  ratio")
    for patch in args.patches:
        f = run_isolated(__file__, ["--one", str(patch), "--steps", str(args.steps),
                                    "--batch-size", str(args.batch_size)])
        print(f"{patch:4d}³ {f['step_s']:7.2f} {f['peak_mb']:9.0f} {f['samples_per_s']:17.1f} "
              f"{f['consumed_per_s']:16.2f} {f['samples_per_s'] / f['consumed_per_s']:6.1f}×")


if __name__ == "__main__":
    main()
