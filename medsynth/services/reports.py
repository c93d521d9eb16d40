"""Per-shard batch reports merged into one: a cluster job array (or torchrun ranks) writes
``<command>_report_<i>of<N>.json`` each; the merge lists every case once and names missing shards."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medsynth.errors import InputError
from medsynth.services.batch import BatchCase, BatchReport, CaseStatus

_SHARD = re.compile(r"(?P<command>\w+)_report_(?P<index>\d+)of(?P<count>\d+)\.json")
# When two reports hold one case (a shard redone with other settings), the most complete outcome wins.
_RANK = {CaseStatus.WRITTEN: 2, CaseStatus.SKIPPED: 1, CaseStatus.FAILED: 0}


def read_report(path: Path) -> BatchReport:
    """A report written by :meth:`BatchReport.write_json`. Errors: unreadable or not such a report."""
    try:
        document = json.loads(Path(path).read_text())
        results = [BatchCase(c["case"], CaseStatus(c["status"]), float(c.get("seconds", 0.0)),
                              list(c.get("outputs", [])), c.get("reason", ""), precision=c.get("precision", ""))
                   for c in document["cases"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a readable batch report ({error}).") from error
    return BatchReport(results, document.get("model"))


@dataclass
class MergedReport:
    """The merged report, the shard files it read and the shard numbers no file was found for."""

    report: BatchReport
    shards: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def merge_reports(out_dir: Path, command: str = "translate") -> MergedReport:
    """Merge every ``<command>_report_<i>of<N>.json`` of ``out_dir`` and write ``<command>_report.json``.

    Each case appears once (by case id, sorted); ``missing`` lists the shards ``i``/``N`` whose report is
    absent (a job that never ran or died before its end). Errors: no shard report in ``out_dir``, shard
    reports of different N.
    """
    out_dir = Path(out_dir)
    found = {}
    for path in sorted(out_dir.glob(f"{command}_report_*of*.json")):
        match = _SHARD.fullmatch(path.name)
        if match and match["command"] == command:
            found[path] = (int(match["index"]), int(match["count"]))
    if not found:
        raise InputError(f"{out_dir}: holds no {command}_report_<i>of<N>.json to merge.")
    counts = {count for _, count in found.values()}
    if len(counts) > 1:
        raise InputError(f"{out_dir}: shard reports of different splits ({', '.join(f'of{c}' for c in sorted(counts))})"
                         "; remove the stale ones and merge again.")
    (count,) = counts
    cases: dict[str, BatchCase] = {}
    reports = [read_report(path) for path in found]
    for report in reports:
        for result in report.results:
            kept = cases.get(result.case)
            if kept is None or _RANK[result.status] > _RANK[kept.status]:
                cases[result.case] = result
    models = {report.model for report in reports}
    merged = BatchReport([cases[c] for c in sorted(cases)], models.pop() if len(models) == 1 else None)
    merged.write_json(out_dir / f"{command}_report.json")
    present = {index for index, _ in found.values()}
    return MergedReport(merged, list(found), [f"{i}/{count}" for i in range(count) if i not in present])

