"""pix2pix (the 2.5D recipe) or vox2vox on real anatomy: pseudo-MR made from real CT volumes, trained and
tested on different patients, scored beside the no-context lookup table and the best constant.

    OMP_NUM_THREADS=2 python benchmarks/real_anatomy.py CT_DIR WORK --test 2 \\
        --config examples/pix2pix_real_cpu.yaml
    # leave-one-patient-out: one run per patient (two at a time with OMP_NUM_THREADS=1), then the table
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py CT_DIR WORK/a --hold-out a ...
    python benchmarks/real_anatomy.py --collect WORK/a WORK/b WORK/c

CT_DIR holds real CT volumes in HU (NIfTI, MHA, NRRD or DICOM series folders), one patient each; the
``--hold-out`` patients (by case id), else the last ``--test`` patients (sorted by case id), are the unseen
test patients, the others train the model and fit the table. Nothing is downloaded. ``--collect`` prints
the per-patient rows and the mean of several such runs (the folds of a leave-one-patient-out benchmark).

The pseudo-MR is a T1-like contrast made from the CT by a *non-monotonic* HU → signal curve: air and
cortical bone dark, fat and fatty marrow bright, soft tissue grey. A single voxel's MR value therefore
cannot tell bone from air (both dark) or marrow from fat (both bright); only anatomy can. A smooth
multiplicative bias field and Gaussian noise (both drawn per patient) make every patient a new intensity
world. Scores are inside the CT's body mask (SynthRAD2023 MAE, bone > 200 HU Dice and MAE, and the mean
signed error in soft tissue, −200…200 HU), with wall and CPU time of the training, beside the lookup table,
the best constant and the reference CT resampled through the model's grid and back (the grid's ceiling).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_header
from scipy import ndimage as ndi

from medsynth.baselines import lookup_baseline
from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import ModelGrid
from medsynth.data.volumes import to_grid
from medsynth.io import read_image, resolve_inputs, write_ct, write_image
from medsynth.io.modelpaths import resolve_model_path
from medsynth.modelfile import TranslationMetadata, load_model
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate
from medsynth.training import train

# HU -> T1-like signal: air dark, lung dark, fat brightest, water/muscle grey, fatty marrow (trabecular
# bone, 150-400 HU) bright, cortical bone (> 700 HU) dark again.
CURVE_HU = (-1024.0, -900.0, -500.0, -200.0, -100.0, -30.0, 20.0, 60.0, 150.0, 300.0, 500.0, 800.0, 3071.0)
CURVE_SIGNAL = (0.01, 0.03, 0.08, 0.75, 1.00, 0.55, 0.40, 0.35, 0.60, 0.70, 0.35, 0.06, 0.03)


def pseudo_mr(ct: np.ndarray, spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """A T1-like MR (float32, arbitrary units ~0-1000) of a CT in HU: curve, bias field, noise."""
    signal = np.interp(ndi.gaussian_filter(ct.astype(np.float32), 0.5), CURVE_HU, CURVE_SIGNAL)
    axes = [np.linspace(-1.0, 1.0, n) for n in ct.shape]
    grid = np.meshgrid(*axes, indexing="ij")
    log_bias = sum(rng.uniform(-0.25, 0.25) * g + rng.uniform(-0.15, 0.15) * g * g for g in grid)
    noisy = signal * np.exp(log_bias) + rng.normal(0.0, 0.02, ct.shape)
    return (1000.0 * rng.uniform(0.7, 1.4) * np.abs(noisy)).astype(np.float32)


def make_dataset(ct_dir: Path, work: Path, held: list[str], seed: int = 0) -> tuple[Path, Path]:
    """``work/data`` (training) and ``work/test`` (the ``held`` case ids) folders of mr/ct/mask.

    Each patient's pseudo-MR is drawn from its place in the sorted list of all patients, so a patient's MR
    is the same in every fold of a leave-one-patient-out benchmark."""
    cases = resolve_inputs(ct_dir)
    names = sorted(cases)
    unknown = sorted(set(held) - set(names))
    if unknown or not held or len(held) >= len(names):
        raise SystemExit(f"{ct_dir}: holds {', '.join(names)}; hold out some of them, not {', '.join(held)}.")
    for index, name in enumerate(names):
        volume = read_image(cases[name])
        ct = np.clip(volume.array, -1024, 3071)
        mr = pseudo_mr(ct, volume.meta.spacing, np.random.default_rng([seed, index]))
        folder = work / ("test" if name in held else "data")
        write_image(folder / "mr" / f"{name}.nii.gz", mr, volume.meta)
        write_ct(folder / "ct" / f"{name}.nii.gz", ct, volume.meta)
        write_image(folder / "mask" / f"{name}.nii.gz", body_mask(ct).astype(np.uint8), volume.meta, np.uint8)
    return work / "data", work / "test"


def best_constant(data: Path, test: Path, out: Path) -> Path:
    """The constant CT that minimises MAE on the training body voxels (their median HU), for every test case."""
    values = [read_image(ct).array[read_image(data / "mask" / ct.name).array > 0.5]
              for ct in sorted((data / "ct").glob("*.nii.gz"))]
    constant = float(np.median(np.concatenate(values)))
    for mr in sorted((test / "mr").glob("*.nii.gz")):
        volume = read_image(mr)
        write_ct(out / mr.name, np.full(volume.array.shape, constant, np.float32), volume.meta)
    return out


def grid_ceiling(model_run: Path, test: Path, out: Path) -> Path:
    """The reference CT resampled onto the model's grid and back, for every test case: the best any model
    on that grid can score, since its output is resampled the same way (thin cortical bone is lost first)."""
    path = resolve_model_path(model_run)
    grid = ModelGrid(TranslationMetadata.from_json(load_model(path).metadata, path).spacing)
    for ct_path in sorted((test / "ct").glob("*.nii.gz")):
        volume = read_image(ct_path)
        moved = to_grid(grid, volume)
        write_ct(out / ct_path.name, grid.inverse(torch.from_numpy(moved.values)[None], moved.geometry)[0],
                 volume.meta)
    return out


def soft_bias(pred_dir: Path, test: Path, case: str = "*") -> float:
    """Mean signed error (HU) in reference soft tissue (−200…200 HU) inside the mask, over all test voxels
    (of ``case`` alone when given)."""
    errors = []
    for ct_path in sorted((test / "ct").glob(f"{case}.nii.gz")):
        ct = read_image(ct_path).array
        soft = (read_image(test / "mask" / ct_path.name).array > 0.5) & (ct > -200) & (ct < 200)
        # check_values=False: the best-constant prediction is constant by design
        errors.append((read_image(pred_dir / ct_path.name, check_values=False).array - ct)[soft])
    return float(np.mean(np.concatenate(errors)))


ROWS = (("model", "sct"), ("lookup table", "lookup"), ("best constant", "constant"),
        ("reference CT through the model grid (ceiling)", "ceiling"))
COLUMNS = ("mae", "bone_dice", "mae_bone", "soft_bias")


def collect(works: list[Path]) -> None:
    """Per held-out patient and mean over the runs in ``works`` (their ``real_anatomy.json``)."""
    runs = [json.loads((work / "real_anatomy.json").read_text()) for work in works]
    print("| | patient | MAE in body (HU) | bone Dice | bone MAE (HU) | soft-tissue mean error (HU) |")
    print("|---|---|---|---|---|---|")
    for name, _ in ROWS:
        for run in runs:
            for patient, row in run["patients"][name].items():
                print(f"| {name} | {patient} | {_cells(row)}")
        mean = {key: float(np.mean([row[key] for run in runs for row in run["patients"][name].values()]))
                for key in COLUMNS}
        print(f"| **{name}, mean** | all | {_cells(mean)}")
    beaten = all(run["patients"]["model"][p]["mae"] < run["patients"]["lookup table"][p]["mae"]
                 for run in runs for p in run["patients"]["model"])
    minutes = ", ".join(f"{run['wall_s'] / 60:.1f} min" for run in runs)
    print(f"model beats the lookup table on every held-out patient: {beaten}; training wall time per fold: {minutes}")


def _cells(row: dict) -> str:
    return f"{row['mae']:.1f} | {row['bone_dice']:.2f} | {row['mae_bone']:.0f} | {row['soft_bias']:+.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ct_dir", type=Path, nargs="?")
    parser.add_argument("work", type=Path, nargs="?")
    parser.add_argument("--test", type=int, default=1, help="unseen test patients (the last by case id)")
    parser.add_argument("--hold-out", action="append", default=[], help="a test patient's case id (repeatable)")
    parser.add_argument("--config", type=Path, default=Path("examples/pix2pix_real_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--collect", type=Path, nargs="+", help="print the table of these finished runs")
    args = parser.parse_args()
    if args.collect:
        return collect(args.collect)
    print_header(f"pix2pix ({args.config.name}) on pseudo-MR of real CT, unseen patients")
    ids = args.hold_out or sorted(resolve_inputs(args.ct_dir))[-args.test:]
    data, test = make_dataset(args.ct_dir, args.work, ids)
    wall, cpu = time.perf_counter(), time.process_time()
    train_options = {"steps": args.steps} if args.steps else {}
    result = train("pix2pix", data, args.work / "run", train_options, {}, args.config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    translate(args.work / "run", test / "mr", args.work / "sct", TranslateOptions(device="cpu"))
    lookup_baseline(data, test / "mr", args.work / "lookup", test / "mask")
    best_constant(data, test, args.work / "constant")
    grid_ceiling(args.work / "run", test, args.work / "ceiling")
    rows, patients = {}, {}
    print(f"test patients: {', '.join(ids)}; training: {result.steps_done} steps, wall {wall:.0f} s, "
          f"CPU {cpu:.0f} s")
    print("| | MAE in body (HU) | bone Dice | bone MAE (HU) | soft-tissue mean error (HU) |")
    print("|---|---|---|---|---|")
    for name, folder in ROWS:
        report = evaluate_folders(args.work / folder, test / "ct", test / "mask")
        summary = report.summary()
        rows[name] = {key: summary[key].mean for key in ("mae", "bone_dice", "mae_bone")}
        rows[name]["soft_bias"] = soft_bias(args.work / folder, test)
        patients[name] = {case.case: {**{k: case.metrics[k] for k in ("mae", "bone_dice", "mae_bone")},
                                      "soft_bias": soft_bias(args.work / folder, test, case.case)}
                          for case in report.results}
        print(f"| {name} | {_cells(rows[name])}")
    for warning in result.warnings:
        print(warning)
    (args.work / "real_anatomy.json").write_text(json.dumps({"rows": rows, "patients": patients, "wall_s": wall,
                                                             "cpu_s": cpu, "steps": result.steps_done,
                                                             "test": ids}, indent=1))


if __name__ == "__main__":
    main()
