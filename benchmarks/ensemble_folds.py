"""A 3-fold vox2vox ensemble on the phantom: each fold and the ensemble translate and are evaluated on unseen heads.

    python benchmarks/ensemble_folds.py [--steps 500] [--folds 3] [--out /tmp/ensemble]

The demo's data and settings (8 training heads at 3.5 mm, 2 unseen heads from another seed): fold k of
``--folds`` trains with ``medsynth train --fold k --folds N`` on its share; ``translate`` then runs
each fold alone and the folder of folds (the ensemble, averaged in the normalised space), and
``evaluate`` scores all of them (SynthRAD 2023 MAE in the body, bone Dice).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from _common import print_header

from medsynth.demo import DEMO_MODEL, DEMO_SHAPE, DEMO_SPACING, DEMO_TRAIN, TEST_SEED
from medsynth.phantom.kinds import write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate
from medsynth.training import train


def check_reused(run: Path, steps: int, folds: int) -> None:
    """Stop when a fold kept from an earlier call was trained with other ``--steps`` or ``--folds``: its
    figures would be reported as this call's."""
    trained = yaml.safe_load((run / "config.yaml").read_text())["train"]
    if (trained["steps"], trained["folds"]) != (steps, folds):
        raise SystemExit(f"{run}: trained with --steps {trained['steps']} --folds {trained['folds']}, not "
                         f"{steps} and {folds}; choose another --out (or remove the folds).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/medsynth-ensemble"))
    args = parser.parse_args()
    print_header(f"{args.folds}-fold vox2vox ensemble on the phantom, {args.steps} steps per fold")
    out = args.out
    for folder, cases, seed in (("data", 8, 0), ("test", 2, TEST_SEED)):
        if not (out / folder).is_dir():  # a re-run reuses the data and the folds already trained
            write_phantom("paired", out / folder, cases=cases, shape=DEMO_SHAPE, spacing=DEMO_SPACING, seed=seed)
    options = {**DEMO_TRAIN, "steps": args.steps, "val_every": args.steps, "folds": args.folds}
    for k in range(args.folds):
        run = out / "folds" / f"fold_{k}"
        if not (run / "model.safetensors").is_file():
            train("pix2pix", out / "data", run, {**options, "fold": k}, DEMO_MODEL)
        check_reused(run, args.steps, args.folds)
    rows = {}
    models = {f"fold {k}": out / "folds" / f"fold_{k}" for k in range(args.folds)}
    models["ensemble"] = out / "folds"
    for name, model in models.items():
        target = out / "sct" / name.replace(" ", "_")
        translate(model, out / "test" / "mr", target, TranslateOptions(device="cpu", overwrite=True))
        report = evaluate_folders(target, out / "test" / "ct", out / "test" / "mask")
        summary = report.summary()
        rows[name] = {key: summary[key].mean for key in ("mae", "bone_dice")}
    print("| model | MAE (HU) | bone Dice |\n|---|---|---|")
    for name, summary in rows.items():
        print(f"| {name} | {summary['mae']:.1f} | {summary['bone_dice']:.3f} |")
    worst = max(summary["mae"] for name, summary in rows.items() if name != "ensemble")
    print(f"ensemble MAE {rows['ensemble']['mae']:.1f} HU vs weakest member {worst:.1f} HU")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
