"""The no-context baseline of SPEC §5: an MR-intensity → median-HU lookup table, for any paired data.

    python benchmarks/lookup_baseline.py TRAIN_DATA TEST_MR OUT --mask TEST_MASK
    medsynth evaluate OUT TEST_CT --mask TEST_MASK

TRAIN_DATA holds ``mr/``, ``ct/`` and optionally ``mask/`` (the cases a model was trained on; the table
is fitted inside their reference body masks); every volume of TEST_MR gets a CT in OUT, on its own grid,
made in the mask it will be scored in, exactly like a model's translations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import print_header

from medsynth.baselines import lookup_baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_data", type=Path)
    parser.add_argument("test_mr", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mask", type=Path, default=None, help="masks the outputs will be scored in")
    args = parser.parse_args()
    print_header("no-context MR-intensity lookup baseline")
    print(f"wrote {lookup_baseline(args.train_data, args.test_mr, args.out, args.mask)}")


if __name__ == "__main__":
    main()
