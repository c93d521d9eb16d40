"""What ``prepare`` reports: the per-case table and the JSON report (the PNG per case: ``overlay.py``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from medsynth.io.outputs import write_text_atomically
from medsynth.prepare.case import CaseOutcome

REPORT_NAME = "prepare_report.json"


def report_table(outcomes: list[CaseOutcome], title: str) -> Table:
    """One row per case: the motion found (its size at the body centre and its rotation), the MR/CT
    similarity before and after, the share of the body the CT covers; the JSON has the full transform."""
    table = Table(title=title)
    for column in ("case", "status", "shift mm", "rotation °", "NMI before→after", "CT covers body", "s"):
        table.add_column(column, justify="left" if column in ("case", "status") else "right")
    for o in outcomes:
        if o.status == "failed":
            table.add_row(o.case, "[red]failed[/]", f"[red]{o.reason}[/]", "", "", "", f"{o.seconds:.1f}")
            continue
        status = "[dim]skipped[/]" if o.status == "skipped" else o.status
        similarity = "" if o.nmi_after is None else f"{_num(o.nmi_before)}→{_num(o.nmi_after)}"
        table.add_row(o.case, status, _num(o.distance_mm, 1), _num(o.rotation_deg, 1), similarity,
                      "" if o.ct_coverage is None else f"{100 * o.ct_coverage:.0f} %", f"{o.seconds:.1f}")
    return table


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(path: Path, outcomes: list[CaseOutcome], settings: dict) -> Path:
    """``prepare_report.json``: the settings, counts and every case's outcome."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("prepared", "skipped", "failed")}
    document = {"settings": settings, **counts, "cases": [asdict(o) for o in outcomes]}
    return write_text_atomically(path, json.dumps(document, indent=2))


def previous_outcomes(path: Path) -> dict[str, CaseOutcome]:
    """The outcomes of an earlier run (shown again for the cases it skips); empty when unreadable."""
    try:
        cases = json.loads(Path(path).read_text())["cases"]
        return {c["case"]: CaseOutcome(**c) for c in cases if c.get("status") == "prepared"}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
