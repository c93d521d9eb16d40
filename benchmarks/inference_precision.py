"""float32 against ``--cpu-bf16`` translation of unseen real patients: time, quality and the HU difference.

    OMP_NUM_THREADS=2 python benchmarks/inference_precision.py WORK [WORK ...]

Each WORK is a finished ``benchmarks/real_anatomy.py`` run (its model in WORK/run, its unseen patients in
WORK/test/{mr,ct,mask}: one leave-one-patient-out fold each). Both precisions translate the test MR with the
same command-line defaults; the table gives the wall time of translate over its cases (model loading included),
the MAE and bone Dice against the real CT in the body mask (SynthRAD2023 protocol, ``evaluate``), and the
voxel-wise |bf16 − fp32| in the body (mean, 99th percentile, largest). Run it on idle cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import print_header

from medsynth.io import read_image
from medsynth.services.evaluate import evaluate_folders
from medsynth.services.translate import TranslateOptions, translate


def translated(work: Path, out: Path, cpu_bf16: bool) -> tuple[float, dict[str, dict[str, float]]]:
    """Seconds per case and each case's metrics for one precision."""
    started = time.perf_counter()
    report = translate(work / "run", work / "test" / "mr", out, TranslateOptions(device="cpu", cpu_bf16=cpu_bf16))
    seconds = (time.perf_counter() - started) / max(1, report.count("written"))
    scores = evaluate_folders(out, work / "test" / "ct", work / "test" / "mask")
    return seconds, {case.case: case.metrics for case in scores.results}


def difference(fp32: Path, bf16: Path, mask: Path) -> tuple[float, float, float]:
    """Mean, 99th percentile and largest |bf16 − fp32| (HU) in the body masks of all cases."""
    values = []
    for path in sorted(fp32.glob("*.nii.gz")):
        body = read_image(mask / path.name).array > 0
        values.append(np.abs(read_image(bf16 / path.name).array.astype(np.float64)
                             - read_image(path).array.astype(np.float64))[body])
    joined = np.concatenate(values)
    return float(joined.mean()), float(np.percentile(joined, 99)), float(joined.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("works", type=Path, nargs="+", help="finished real_anatomy.py runs")
    args = parser.parse_args()
    print_header("translate unseen real patients in float32 and with --cpu-bf16")
    print("| fold (test patients) | s/case fp32 | s/case bf16 | MAE fp32 / bf16 (HU) | bone Dice fp32 / bf16 | "
          "abs(bf16 - fp32) mean / p99 / max (HU) |")
    print("|---|---|---|---|---|---|")
    for work in args.works:
        with tempfile.TemporaryDirectory() as tmp:
            fp32_s, fp32 = translated(work, Path(tmp) / "fp32", cpu_bf16=False)
            bf16_s, bf16 = translated(work, Path(tmp) / "bf16", cpu_bf16=True)
            mean, p99, largest = difference(Path(tmp) / "fp32", Path(tmp) / "bf16", work / "test" / "mask")
        mae = " / ".join(f"{np.mean([m['mae'] for m in r.values()]):.2f}" for r in (fp32, bf16))
        dice = " / ".join(f"{np.mean([m['bone_dice'] for m in r.values()]):.3f}" for r in (fp32, bf16))
        print(f"| {work.name} ({', '.join(sorted(fp32))}) | {fp32_s:.1f} | {bf16_s:.1f} | {mae} | {dice} | "
              f"{mean:.2f} / {p99:.0f} / {largest:.0f} |", flush=True)


if __name__ == "__main__":
    main()
