"""The best MAE any MR→CT model can reach on the phantom: the oracle CT against the phantom CT.

The oracle (``medsynth.phantom.oracle_ct``) knows every tissue boundary but not the cortical-density
field, which the T1 MR does not show. Read every translation figure on the phantom against this.

    python benchmarks/phantom_floor.py --cases 12 --shape 64 76 64 --spacing 2.5 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import print_header

from medsynth.metrics.synthrad import synthrad2023
from medsynth.metrics.tissue import tissue_metrics
from medsynth.phantom import make_head, oracle_ct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 76, 64))
    parser.add_argument("--spacing", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0, help="the dataset seed of `medsynth phantom paired`")
    args = parser.parse_args()
    print_header("MAE floor of MR→CT translation on the paired phantom (oracle CT vs phantom CT)")
    rows = []
    for index in range(args.cases):
        head = make_head((args.seed, index), tuple(args.shape), args.spacing)
        oracle = oracle_ct((args.seed, index), tuple(args.shape), args.spacing)
        mask = head.mask > 0
        rows.append({**synthrad2023(oracle, head.ct, mask), **tissue_metrics(oracle, head.ct, mask)})
    for name in rows[0]:
        values = np.array([row[name] for row in rows])
        print(f"{name:>14}: {np.nanmean(values):9.3f} ± {np.nanstd(values, ddof=1):.3f}")


if __name__ == "__main__":
    main()
