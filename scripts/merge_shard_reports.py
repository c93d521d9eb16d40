#!/usr/bin/env python3
"""Merge the per-shard reports of a cluster batch into OUT_DIR/translate_report.json.

    python scripts/merge_shard_reports.py OUT_DIR [--command translate|attribute]

Exit 0: every shard reported and every case done; 1: failed cases or missing shards (listed);
2: nothing to merge. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsynth.errors import MedsynthError
from medsynth.services.batch import CaseStatus
from medsynth.services.reports import merge_reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--command", default="translate", choices=["translate", "attribute"])
    args = parser.parse_args()
    try:
        merged = merge_reports(args.out_dir, args.command)
    except MedsynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = merged.report
    print(f"{len(merged.shards)} shard report(s) -> {args.out_dir / f'{args.command}_report.json'}: "
          f"{report.count(CaseStatus.WRITTEN)} written, {report.count(CaseStatus.SKIPPED)} skipped, "
          f"{report.count(CaseStatus.FAILED)} failed")
    for failure in report.failures:
        print(f"failed: {failure.case}: {failure.reason}")
    if merged.missing:
        print(f"missing shard report(s): {', '.join(merged.missing)} (rerun those array tasks)")
    return 1 if report.failures or merged.missing else 0


if __name__ == "__main__":
    sys.exit(main())
