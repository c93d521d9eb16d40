"""Training steps per second of a recipe in this checkout against another commit's, side by side.

    git worktree add /tmp/base 0ddacb4
    OMP_NUM_THREADS=2 python benchmarks/recipe_speed.py DATA --base /tmp/base \\
        [--config examples/pix2pix_real_cpu.yaml] [--steps 300] [--rounds 3]

Each side trains its own ``--config`` (read from its own tree: the recipe as that commit shipped it) on DATA
in a fresh process that imports medsynth from that tree; the rounds alternate the two sides so that a busy
moment of the machine falls on both. Steps per second come from two ``Trainer.fit`` calls of different
lengths, so that what a fit does once (logbook, checkpoint, model file) cancels out; data preparation is
not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import fit_seconds_per_step, print_header

HERE = Path(__file__).resolve().parents[1]


def one(tree: Path, data: Path, config: Path, steps: int, run: Path) -> None:
    """Steps per second of ``tree``'s pix2pix trained as ``config`` says (printed as JSON)."""
    sys.path.insert(0, str(tree))
    import yaml

    from medsynth.engine.config import TrainConfig
    from medsynth.engine.runtime import make_runtime
    from medsynth.engine.trainer import Trainer
    from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig

    document = yaml.safe_load(config.read_text())
    train = TrainConfig(**{**document.get("train", {}), "val_every": 0, "ckpt_every": 10**6,
                           "preview_every": 10**6, "log_every": 10**6, "device": "cpu"})
    bf16 = {"cpu_bf16": train.cpu_bf16} if hasattr(train, "cpu_bf16") else {}  # older commits: fp32 only
    trainer = Trainer(Pix2Pix(Pix2PixConfig(**{**document.get("model", {}), "val_cases": 0}), data), train, run,
                      make_runtime("cpu", train.amp, **bf16))

    print(json.dumps({"steps_per_s": 1.0 / fit_seconds_per_step(trainer, steps)}))


def measure(tree: Path, data: Path, config: Path, steps: int, run: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, str(data), "--one", str(tree), "--config", str(config),
                           "--steps", str(steps), "--run", str(run)], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--base", type=Path, help="a checkout of the commit to compare with")
    parser.add_argument("--config", type=Path, default=Path("examples/pix2pix_real_cpu.yaml"),
                        help="the recipe, relative to each tree")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.data, args.config, args.steps, args.run)
    print_header(f"{args.config} steps per second: this checkout against {args.base}")
    trees = {"base": args.base.resolve(), "this": HERE}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                rates[name].append(measure(tree, args.data.resolve(), tree / args.config, args.steps,
                                           Path(tmp) / f"{name}{round_}"))
    print("| checkout | steps/s (median of rounds) | each round |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} ({trees[name]}) | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    ratio = statistics.median(rates["this"]) / statistics.median(rates["base"])
    print(f"this / base: {ratio:.2f}x")
    print(json.dumps({"rates": rates, "ratio": ratio}))


if __name__ == "__main__":
    main()
