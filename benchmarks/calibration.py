"""Does the calibrated expected error predict the actual error on unseen cases? (issue 29, docs/qa.md)

    OMP_NUM_THREADS=2 python benchmarks/calibration.py WORK [--steps 2000 300] [--test 6] [--val 2]

On the phantom: the demo's recipe (``medsynth.demo``) trains on 8 heads, calibrates its TTA spread on ``--val``
of them (``train`` does it after training), then translates ``--test`` unseen heads with ``--tta
--uncertainty 4``; each model of ``--steps`` (a trained one and a deliberately under-trained one) gives:

- the Spearman correlation of predicted and true per-case MAE (over the unseen heads, and over both models'
  heads together, where a worse model must predict a worse MAE),
- whether each case's predicted interval covers its true MAE,
- the voxel-level AUROC of the expected-error map for errors above 100 HU, in the body.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import print_header
from scipy.stats import spearmanr

from medsynth.demo import DEMO_MODEL, DEMO_SHAPE, DEMO_SPACING, DEMO_TRAIN, TEST_SEED
from medsynth.io import read_image
from medsynth.metrics.calibration import auroc
from medsynth.phantom.kinds import write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.options import TranslateOptions
from medsynth.services.translate import translate
from medsynth.training import train

THRESHOLD_HU = 100.0


def one_model(work: Path, steps: int, val: int) -> list[dict]:
    run, sct = work / f"run_{steps}", work / f"sct_{steps}"
    if not (run / "model.safetensors").exists():
        train("pix2pix", work / "data", run, {**DEMO_TRAIN, "steps": steps}, {**DEMO_MODEL, "val_cases": val})
    report = translate(run, work / "test" / "mr", sct, TranslateOptions(device="cpu", tta=True, uncertainty=4,
                                                                        overwrite=True))
    # the phantom's body masks, as in the calibration on its validation heads
    scored = evaluate_folders(sct, work / "test" / "ct", work / "test" / "mask")
    truth = {r.case: r.metrics["mae"] for r in scored.results}
    rows = []
    for case in report.results:
        ct = read_image(work / "test" / "ct" / f"{case.case}.nii.gz").array.astype(np.float32)
        error = np.abs(read_image(sct / f"{case.case}.nii.gz").array.astype(np.float32) - ct)
        expected = read_image(sct / f"{case.case}_error.nii.gz").array
        body = read_image(work / "test" / "mask" / f"{case.case}.nii.gz").array > 0
        predicted, low, high = case.predicted_mae_hu
        rows.append({"steps": steps, "case": case.case, "true_mae": truth[case.case], "predicted_mae": predicted,
                     "low": low, "high": high, "covered": bool(low <= truth[case.case] <= high),
                     "auroc_100hu": auroc(expected[body], error[body] > THRESHOLD_HU)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 300])
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--val", type=int, default=2)
    args = parser.parse_args()
    print_header("calibrated expected error against the true error, unseen phantom heads")
    if not (args.work / "data").exists():
        write_phantom("paired", args.work / "data", cases=8, shape=DEMO_SHAPE, spacing=DEMO_SPACING, seed=0)
        write_phantom("paired", args.work / "test", cases=args.test, shape=DEMO_SHAPE, spacing=DEMO_SPACING,
                      seed=TEST_SEED)
    rows = [row for steps in args.steps for row in one_model(args.work, steps, args.val)]
    print("| steps | case | true MAE (HU) | predicted MAE (interval) | covered | voxel AUROC, error > 100 HU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['case']} | {r['true_mae']:.1f} | {r['predicted_mae']:.1f} "
              f"({r['low']:.0f}-{r['high']:.0f}) | {'yes' if r['covered'] else 'no'} | {r['auroc_100hu']:.3f} |")
    for steps in args.steps:
        mine = [r for r in rows if r["steps"] == steps]
        rho = spearmanr([r["true_mae"] for r in mine], [r["predicted_mae"] for r in mine]).statistic
        print(f"{steps} steps: Spearman {rho:.2f} over {len(mine)} unseen heads, interval covers "
              f"{sum(r['covered'] for r in mine)}/{len(mine)}, mean true {np.mean([r['true_mae'] for r in mine]):.1f} "
              f"vs predicted {np.mean([r['predicted_mae'] for r in mine]):.1f} HU, "
              f"median AUROC {np.median([r['auroc_100hu'] for r in mine]):.3f}")
    rho = spearmanr([r["true_mae"] for r in rows], [r["predicted_mae"] for r in rows]).statistic
    print(f"all models together: Spearman {rho:.2f} over {len(rows)} cases")
    (args.work / "calibration.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
