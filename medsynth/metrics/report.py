"""An evaluation's results: per-case metrics, failures, cohort mean ± sd; as a table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from medsynth.io.outputs import write_text_atomically

# Column headings and the decimals worth showing (HU to 0.1, dB to 0.01, indices to 1e-4).
METRIC_LABELS = {
    "mae": ("MAE (HU)", 1),
    "psnr": ("PSNR (dB)", 2),
    "ssim": ("SSIM", 4),
    "ms_ssim": ("MS-SSIM", 4),
    "mae_air": ("MAE air", 1),
    "mae_soft": ("MAE soft", 1),
    "mae_bone": ("MAE bone", 1),
    "bone_dice": ("Dice bone", 4),
}


@dataclass(frozen=True)
class CaseResult:
    """The metrics of one evaluated case."""

    case: str
    metrics: dict[str, float]


@dataclass(frozen=True, order=True)
class CaseFailure:
    """A case that could not be evaluated, and why (one sentence naming the file)."""

    case: str
    reason: str


@dataclass(frozen=True)
class MetricSummary:
    """Cohort statistics of one metric over the cases where it is defined (NaN left out).

    ``sd`` is the sample standard deviation (ddof = 1), as papers report it; NaN for n < 2.
    """

    mean: float
    sd: float
    n: int


@dataclass
class EvaluationReport:
    """Per-case results and failures of one ``evaluate`` run, in case order."""

    protocol: str
    metric_names: tuple[str, ...]
    results: list[CaseResult] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # side products in PRED (``<case>_std`` ...), not scored
    warnings: list[CaseFailure] = field(default_factory=list)  # scored, but something looks wrong

    def summary(self) -> dict[str, MetricSummary]:
        """Mean ± sd of every metric over the cases where it is not NaN (e.g. no bone in a case)."""
        return {name: summarise([r.metrics[name] for r in self.results]) for name in self.metric_names}

    def table(self, name: str = "") -> Table:
        """A Rich table: one row per evaluated case, then the cohort mean and sd on rows of their own."""
        title = f"{self.protocol}: {len(self.results)} cases evaluated, {len(self.failures)} failed"
        title = f"{name} — {title}" if name else title
        table = Table(title=title)
        table.add_column("case")
        for name in self.metric_names:
            table.add_column(METRIC_LABELS[name][0], justify="right")
        for result in self.results:
            table.add_row(escape(result.case), *(_format(result.metrics[n], n) for n in self.metric_names))
        summary = self.summary()
        table.add_section()
        table.add_row("mean", *(_format(summary[n].mean, n) for n in self.metric_names), style="bold")
        table.add_row("sd", *(_format(summary[n].sd, n) for n in self.metric_names))
        return table

    def to_csv(self, path: str | Path) -> Path:
        """One row per case: ``case``, the metrics (``nan``/``inf`` as such), ``error`` for failed cases."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", *self.metric_names, "error"])
        for result in self.results:
            writer.writerow([result.case, *(repr(float(result.metrics[n])) for n in self.metric_names), ""])
        for failure in self.failures:
            writer.writerow([failure.case, *([""] * len(self.metric_names)), failure.reason])
        return write_text_atomically(path, buffer.getvalue())

    def to_json(self, path: str | Path) -> Path:
        """Protocol, per-case metrics, summary and failures; NaN and ±inf are written as ``null``.

        JSON has no literal for them, and most parsers reject Python's ``NaN``/``Infinity``;
        ``null`` means "undefined" (an empty tissue class) or, for PSNR only, "identical volumes".
        """
        document = {
            "protocol": self.protocol,
            "metrics": list(self.metric_names),
            "cases": [{"case": r.case, **{n: _json_number(r.metrics[n]) for n in self.metric_names}}
                      for r in self.results],
            "summary": {name: {"mean": _json_number(s.mean), "sd": _json_number(s.sd), "n": s.n}
                        for name, s in self.summary().items()},
            "failures": [{"case": f.case, "reason": f.reason} for f in self.failures],
            "ignored": list(self.ignored),
            "warnings": [{"case": w.case, "reason": w.reason} for w in self.warnings],
        }
        return write_text_atomically(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def summarise(values: list[float]) -> MetricSummary:
    """Mean and sample sd of the values that are not NaN; an infinite value makes the mean infinite."""
    defined = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if defined.size == 0:
        return MetricSummary(float("nan"), float("nan"), 0)
    with np.errstate(invalid="ignore"):  # inf − inf in the sd of an infinite PSNR is NaN, not an error
        sd = float(np.std(defined, ddof=1)) if defined.size > 1 else float("nan")
    return MetricSummary(float(np.mean(defined)), sd, int(defined.size))


def _format(value: float, name: str) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.{METRIC_LABELS[name][1]}f}"


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
