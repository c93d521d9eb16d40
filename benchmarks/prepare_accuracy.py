"""How well ``prepare`` undoes a known rigid motion, per registration kind, on phantom pairs.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/prepare_accuracy.py OUT [--cases 3]

Each pair: MR 56×64×56 at 3 mm; its CT rotated 5° about S and moved 6 mm, then resampled onto a coarser,
smaller CT grid (3.75×3.75×4.2 mm), as in tests/test_prepare.py. The residual is |T(found(p)) − p| over
body voxels p of the MR: the distance left between where prepare put the CT's anatomy and where it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import print_header

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_prepare import body_points_lps, true_motion, write_raw_case

from medsynth.prepare.service import PrepareOptions, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", type=int, default=3)
    args = parser.parse_args()
    print_header("prepare: residual of a known rigid motion")
    heads = {f"case_{i}": write_raw_case(args.out / "raw", f"case_{i}", i)["head"] for i in range(args.cases)}
    for kind in ("rigid", "affine", "deformable"):
        report = prepare(args.out / "raw", args.out / kind, PrepareOptions(register=kind, overwrite=True))
        for o in report.outcomes:
            found = sitk.AffineTransform(3)
            found.SetMatrix(o.transform["matrix"])
            found.SetCenter(o.transform["center"])
            found.SetTranslation(o.transform["translation"])
            head = heads[o.case]
            points = body_points_lps(head.mask > 0, head.affine)[::9].tolist()
            residual = [np.linalg.norm(np.subtract(true_motion().TransformPoint(found.TransformPoint(p)), p))
                        for p in points]
            print(json.dumps({"register": kind, "case": o.case, "residual_mean_mm": round(float(np.mean(residual)), 2),
                              "residual_max_mm": round(float(np.max(residual)), 2),
                              "rotation_deg": round(o.rotation_deg, 2), "nmi_before": round(o.nmi_before, 3),
                              "nmi_after": round(o.nmi_after, 3), "seconds": round(o.seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
