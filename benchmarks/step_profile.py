"""Where a pix2pix training step goes: data, forward, backward, optimiser, EMA, engine; against a plain loop.

    OMP_NUM_THREADS=2 python benchmarks/step_profile.py DATA [--config examples/pix2pix_real_cpu.yaml]
        [--steps 40] [--set channels_last=true --set amp_cpu=true ...]

DATA is a paired folder (``mr/``, ``ct/``); the real-anatomy recipe's figures in docs/performance.md use
the training folder ``benchmarks/real_anatomy.py`` writes (``WORK/data``). Three figures per setting:

- the split of one step, timed around each part of a plain PyTorch loop (no engine) that draws the same
  samples (``Pix2Pix.sample``), runs the same networks and losses (``Pix2Pix.train_step`` through a bare
  context) and keeps the same EMA;
- the engine's step (``Trainer.fit``: the same work plus schedules, logging, checks) and its overhead
  against that plain loop;
- the convolution roofline: G's floating-point operations per step (``torch.utils.flop_counter``) over
  the machine's own throughput on one large convolution of the same kind, i.e. the fastest a step's
  network part could run here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import fit_seconds_per_step, print_header
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from medsynth.engine.config import TrainConfig
from medsynth.engine.context import StepContext
from medsynth.engine.runtime import make_runtime
from medsynth.engine.trainer import Trainer
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig


class _Timed:
    """Seconds spent per named part, summed over the timed steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - self._last
        self._last = now


def build(data: Path, config: Path, settings: dict[str, object], run: Path) -> Trainer:
    document = yaml.safe_load(config.read_text())
    engine_keys = TrainConfig.__dataclass_fields__
    train = {**document.get("train", {}), **{k: v for k, v in settings.items() if k in engine_keys}}
    model = {**document.get("model", {}), **{k: v for k, v in settings.items() if k not in engine_keys}}
    family = Pix2Pix(Pix2PixConfig(**{**model, "val_cases": 0}), data)
    train_config = TrainConfig(**{**train, "val_every": 0, "ckpt_every": 10**6, "preview_every": 10**6,
                                  "log_every": 10**6, "device": "cpu"})
    return Trainer(family, train_config, run, make_runtime("cpu", train_config.amp, train_config.cpu_bf16))


def plain_loop(trainer: Trainer, steps: int) -> dict[str, float]:
    """The same samples, networks, losses and EMA with no engine around them; seconds per step by part."""
    family, size = trainer.family, trainer.config.batch_size
    timed = _Timed()
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps (allocator, oneDNN kernels)
            timed = _Timed()
        batch = default_collate([family.sample(step * size + i) for i in range(size)])
        batch = {k: trainer._to_device(v) for k, v in batch.items()}
        timed.lap("data (sample, augment, collate)")
        context = StepContext(trainer.runtime, family.networks, trainer.trained, trainer.optimizers,
                              trainer.scalers, lambda: None)
        context.step = step
        family.train_step(batch, context)
        timed.lap("forward + backward + optimiser")
        for name, ema in trainer.ema.items():
            ema.update_parameters(family.networks[name])
        timed.lap("EMA")
    return {part: seconds / steps for part, seconds in timed.seconds.items()}


def roofline(trainer: Trainer) -> dict[str, float]:
    """G's GFLOP per step (forward + backward) and the machine's GFLOP/s on one large 3×3 convolution."""
    family, size = trainer.family, trainer.config.batch_size
    batch = default_collate([family.sample(i) for i in range(size)])
    G = family.networks["G"]
    with FlopCounterMode(display=False) as counter:
        out = G(trainer._to_device(batch["mr"]))
        (out[0] if isinstance(out, tuple) else out).float().mean().backward()
    G.zero_grad(set_to_none=True)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1) if family.config.dims == 2 else torch.nn.Conv3d(64, 64, 3, padding=1)
    x = torch.randn((8, 64, 128, 128) if family.config.dims == 2 else (2, 64, 32, 64, 64))
    if trainer.memory_format is not None:
        conv, x = conv.to(memory_format=trainer.memory_format), x.contiguous(memory_format=trainer.memory_format)
    with FlopCounterMode(display=False) as conv_counter:
        conv(x)
    with torch.no_grad(), trainer.runtime.autocast():
        conv(x)
        started = time.perf_counter()
        for _ in range(5):
            conv(x)
        seconds = (time.perf_counter() - started) / 5
    return {"G_gflop_per_step": counter.get_total_flops() / 1e9,
            "machine_conv_gflop_s": conv_counter.get_total_flops() / 1e9 / seconds}


def parse_setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--config", type=Path, default=Path("examples/pix2pix_real_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], type=parse_setting,
                        help="a train or model setting, e.g. channels_last=true (repeatable)")
    args = parser.parse_args()
    print_header(f"pix2pix step profile ({args.config.name}, {dict(args.set) or 'as configured'})")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(args.data, args.config, dict(args.set), Path(tmp) / "run")
        parts = plain_loop(trainer, args.steps)
        plain = sum(parts.values())
        engine = fit_seconds_per_step(trainer, args.steps)
        bound = roofline(trainer)
    network_floor = bound["G_gflop_per_step"] / bound["machine_conv_gflop_s"]
    print("| part | ms per step | share |")
    print("|---|---|---|")
    for part, seconds in parts.items():
        print(f"| {part} | {1000 * seconds:.1f} | {seconds / plain:.0%} |")
    print(f"| plain loop, total | {1000 * plain:.1f} | {1 / plain:.2f} steps/s |")
    print(f"| engine (Trainer.fit) | {1000 * engine:.1f} | {1 / engine:.2f} steps/s, "
          f"overhead {engine / plain - 1:+.1%} |")
    print(f"| G's convolutions at the machine's conv throughput (roofline) | {1000 * network_floor:.1f} | "
          f"{bound['G_gflop_per_step']:.1f} GFLOP at {bound['machine_conv_gflop_s']:.0f} GFLOP/s |")
    print(json.dumps({"parts_s": parts, "plain_s": plain, "engine_s": engine, **bound}))


if __name__ == "__main__":
    main()
