"""``demo``: phantom -> vox2vox training -> translation of unseen heads -> evaluation -> previews.

Everything a new user needs to see medsynth work end to end, sized to finish in a few minutes on
two CPU cores. The settings are a CPU budget, not the paper's: a fivefold learning rate for G and a small
U-Net, so that a few hundred steps already give anatomy-aware synthetic CT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.baselines import lookup_baseline
from medsynth.io.image import read_image, write_ct
from medsynth.metrics.report import EvaluationReport
from medsynth.phantom import oracle_ct
from medsynth.phantom.kinds import case_name, write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate
from medsynth.training import train
from medsynth.viz import mid_slices, save_grid, window

DEMO_SHAPE = (48, 56, 48)
DEMO_SPACING = 3.5
TEST_SEED = 1  # the unseen heads come from another phantom seed than the training heads (0)
DEMO_TRAIN = {"batch_size": 2, "val_every": 250, "ckpt_every": 500, "preview_every": 250, "device": "cpu"}
# The phantom's heads share one MR contrast and scanner, so two of the defaults for new patients' MR are
# off here (docs/pix2pix.md, "The demo"): augmentation (it slows learning at this budget) and histogram
# standardisation (per-volume percentile scaling learns faster on one contrast: 119.9 against 128.6 HU
# on the unseen heads at 1,500 steps).
DEMO_MODEL = {"patch_size": [32, 32, 32], "channels": [16, 32, 64, 128], "disc_channels": 32,
              "lr": 1e-3, "lr_d": 2.5e-4, "augment": 0.0, "mr_scaling": "percentile"}
DEMO_STEPS = 2000


@dataclass
class DemoResult:
    out: Path
    report: EvaluationReport
    baseline: EvaluationReport  # the no-context MR-intensity lookup table on the same test heads
    floor: EvaluationReport  # the phantom's oracle CT: the best any MR-based model could do
    preview: Path


def run_demo(out: Path, steps: int = DEMO_STEPS, train_cases: int = 8, test_cases: int = 2) -> DemoResult:
    """Run the whole pipeline in ``out``; returns the evaluation of the unseen test heads."""
    out = Path(out)
    write_phantom("paired", out / "data", cases=train_cases, shape=DEMO_SHAPE, spacing=DEMO_SPACING, seed=0)
    write_phantom("paired", out / "test", cases=test_cases, shape=DEMO_SHAPE, spacing=DEMO_SPACING, seed=TEST_SEED)
    train("pix2pix", out / "data", out / "run", {**DEMO_TRAIN, "steps": steps}, {**DEMO_MODEL, "val_cases": 1})
    translate(out / "run", out / "test" / "mr", out / "sct", TranslateOptions(device="cpu"))
    report = evaluate_folders(out / "sct", out / "test" / "ct", out / "test" / "mask")
    report.to_json(out / "metrics.json")
    lookup_baseline(out / "data", out / "test" / "mr", out / "baseline", out / "test" / "mask")
    baseline = evaluate_folders(out / "baseline", out / "test" / "ct", out / "test" / "mask")
    baseline.to_json(out / "metrics_baseline.json")
    write_oracle(out / "test", out / "oracle", seed=TEST_SEED, cases=test_cases)
    floor = evaluate_folders(out / "oracle", out / "test" / "ct", out / "test" / "mask")
    floor.to_json(out / "metrics_floor.json")
    return DemoResult(out, report, baseline, floor, write_comparison(out / "test", out / "sct", out / "demo.png"))


def write_oracle(test: Path, out_dir: Path, seed: int, cases: int) -> Path:
    """The oracle CT of each test head (``medsynth.phantom.oracle_ct``), on the head's own grid."""
    for index in range(cases):
        name = f"{case_name(index)}.nii.gz"
        reference = read_image(test / "ct" / name)
        write_ct(Path(out_dir) / name, oracle_ct((seed, index), DEMO_SHAPE, DEMO_SPACING), reference.meta)
    return Path(out_dir)


def write_comparison(test: Path, sct: Path, path: Path) -> Path:
    """A PNG row per test case: MR | synthetic CT | CT | |error| (0-500 HU), axial mid-slices."""
    rows, titles = [], []
    for ct_file in sorted((test / "ct").glob("*.nii.gz")):
        name = ct_file.name
        mr, ct, syn = (read_image(folder / name) for folder in (test / "mr", test / "ct", sct))
        error = np.abs(syn.array - ct.array)
        panels = [window(mr.array, *np.percentile(mr.array, (1, 99.5))), window(syn.array, -1000, 1500),
                  window(ct.array, -1000, 1500), window(error, 0, 500)]
        rows.append([mid_slices(p, ct.meta.affine).axial for p in panels])
        titles += [f"{name[:-7]} MR", "synthetic CT", "CT", "|error| 0-500 HU"]
    return save_grid(path, rows, titles, scale=2)
