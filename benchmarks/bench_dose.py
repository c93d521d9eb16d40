"""Time per case of ``evaluate --dose`` on one phantom head, and the figures of a +60 HU synthetic CT.

    python benchmarks/bench_dose.py [--shape 128 128 128] [--spacing 1.5] [--modality both] [--seed 0] [--threads 2]

The "synthetic CT" is the CT with +60 HU added inside the body, so the figures say how a uniform
soft-tissue calibration error reaches the dose. Times per phase are wall-clock seconds with the
process's CPU seconds (all its threads) in brackets: on a machine shared with other jobs the CPU time
divided by the threads is the better estimate. pyRadPlan's import (once per process) is reported apart.
The default grid is 128³ voxels of 1.5 mm (a 19 cm head).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128))
    parser.add_argument("--spacing", type=float, default=1.5)
    parser.add_argument("--modality", default="both", choices=("photon", "proton", "both"))
    parser.add_argument("--seed", type=int, default=0, help="phantom subject")
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP and numba threads")
    args = parser.parse_args()
    # Threads are fixed before numpy, scipy and numba load their thread pools.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np
    from _common import peak_rss_mb, print_header

    from medsynth.dose.evaluate import compare_doses
    from medsynth.dose.protocol import DoseSettings, Modality, PatientFrame, default_target
    from medsynth.phantom import make_head

    print_header(f"dose evaluation, one case of {tuple(args.shape)} voxels of {args.spacing} mm, "
                 f"{args.threads} threads")
    clock = _Clock()
    from medsynth.dose.planning import make_plan, recompute

    print(f"import pyRadPlan + pymedphys: {clock.lap()} (once per process)")
    head = make_head((args.seed, 0), tuple(args.shape), args.spacing)
    frame = PatientFrame.of(head.affine)
    ct, body = frame.forward(head.ct.astype(np.float64)), frame.forward(head.mask > 0)
    target = default_target(body, frame.spacing)
    settings = DoseSettings()
    print(f"body {int(body.sum())} voxels, target {int(target.sum())} voxels, dose grid {settings.dose_grid_mm} mm")
    case = _Clock()
    for kind in Modality(args.modality).kinds():
        clock = _Clock()
        plan = make_plan(kind, ct, body, target, frame.spacing, settings)
        times = {"plan on CT": clock.lap()}
        doses = recompute(plan, ct + 60.0 * body)
        times["recompute on sCT"] = clock.lap()
        metrics, _ = compare_doses(plan, doses, body, target, settings)
        times["metrics (gamma etc.)"] = clock.lap()
        print(f"{kind}: {len(plan.axes)} beams, {plan.weights.size} beamlets/spots; "
              + ", ".join(f"{k} {v}" for k, v in times.items()))
        print("  +60 HU: " + ", ".join(f"{k.removeprefix(kind + '_')} {v:.2f}" for k, v in metrics.items()))
    print(f"time per case ({args.modality}): {case.lap()}; peak memory {peak_rss_mb():.0f} MiB")


class _Clock:
    """Wall-clock and process CPU seconds since the last lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> str:
        wall, cpu = time.perf_counter(), time.process_time()
        text = f"{wall - self.wall:.1f} s ({cpu - self.cpu:.1f} s CPU)"
        self.wall, self.cpu = wall, cpu
        return text


if __name__ == "__main__":
    main()
