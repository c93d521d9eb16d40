"""Time per case of ``medsynth prepare`` for a 256×256×150 MR/CT pair (1 mm MR; CT moved by 5° and 6 mm
onto a 1.2×1.2×2 mm grid of its own), N4 + rigid registration by default.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_prepare.py OUT [--register rigid] [--repeats 1]

Prints the machine, its load average (the machine may be shared) and the wall and CPU time per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import print_header

from medsynth.io.image import ImageMeta, write_image
from medsynth.io.itk import to_sitk
from medsynth.phantom.anatomy import make_head
from medsynth.prepare.service import PrepareOptions, prepare

SHAPE = (256, 256, 150)


def write_raw_pair(raw: Path, name: str, seed: int) -> None:
    head = make_head((3, seed), SHAPE, 1.0)
    meta = ImageMeta.from_affine(head.affine, SHAPE)
    write_image(raw / "mr" / f"{name}.nii.gz", head.mr, meta)
    motion = sitk.Euler3DTransform()
    motion.SetRotation(0.0, 0.0, np.radians(5.0))
    motion.SetTranslation((6.0, 0.0, 0.0))
    grid = sitk.Image([213, 213, 80], sitk.sitkFloat32)
    grid.SetSpacing([1.2, 1.2, 2.0])
    grid.SetOrigin([-127.8, -127.8, -80.0])
    ct = sitk.Resample(to_sitk(head.ct, meta), grid, motion, sitk.sitkLinear, -1024.0)
    (raw / "ct").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(raw / "ct" / f"{name}.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--register", default="rigid")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print_header(f"prepare: time per case, {'x'.join(map(str, SHAPE))} MR")
    print(f"# ITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}, "
          f"load average before {os.getloadavg()[0]:.1f}")
    raw = args.out / "raw"
    for k in range(args.repeats):
        write_raw_pair(raw, f"case_{k}", k)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    report = prepare(raw, args.out / "prepared", PrepareOptions(register=args.register, overwrite=True))
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    for o in report.outcomes:
        print(json.dumps({"case": o.case, "status": o.status, "seconds": round(o.seconds, 1),
                          "rotation_deg": o.rotation_deg, "distance_mm": o.distance_mm, "reason": o.reason}))
    print(f"# {wall / len(report.outcomes):.1f} s per case (wall, reading and writing included), "
          f"{cpu / len(report.outcomes):.1f} CPU-s per case (all threads and workers); "
          f"load average after {os.getloadavg()[0]:.1f}")


def _cpu_seconds() -> float:
    """User + system seconds of this process's threads and of its finished workers: on a shared machine a
    fairer figure than the wall time, which the other jobs stretch."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
