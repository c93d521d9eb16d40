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
    **{f"hu_dice_{name}": (f"HU-Dice {name}", 3) for name in ("bone", "air", "soft")},
    **{f"hu_hd95_{name}_mm": (f"HU-HD95 {name} (mm)", 1) for name in ("bone", "air", "soft")},
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
    # Column heading and decimals shown, per metric name (defaults: METRIC_LABELS).
    labels: dict[str, tuple[str, int]] = field(default_factory=lambda: dict(METRIC_LABELS))

    def join(self, other: EvaluationReport) -> EvaluationReport:
        """Both reports' metrics side by side, one row per case; a metric a case lacks is NaN.

        A case that failed in either report keeps the metrics it has and carries the failure too, so
        the CSV shows its partial row with the reason and the exit status still says it failed.
        """
        names = self.metric_names + tuple(n for n in other.metric_names if n not in self.metric_names)
        metrics: dict[str, dict[str, float]] = {}
        for result in (*self.results, *other.results):
            metrics.setdefault(result.case, {}).update(result.metrics)
        results = [CaseResult(case, {n: values.get(n, float("nan")) for n in names})
                   for case, values in metrics.items()]
        return EvaluationReport(f"{self.protocol} + {other.protocol}", names, results,
                                failures=sorted({*self.failures, *other.failures}),
                                ignored=sorted({*self.ignored, *other.ignored}),
                                warnings=sorted({*self.warnings, *other.warnings}),
                                labels={**self.labels, **other.labels})

    def summary(self) -> dict[str, MetricSummary]:
        """Mean ± sd of every metric over the cases where it is not NaN (e.g. no bone in a case)."""
        return {name: summarise([r.metrics[name] for r in self.results]) for name in self.metric_names}

    def table(self, name: str = "", columns: tuple[str, ...] | None = None) -> Table:
        """A Rich table: one row per evaluated case, then the cohort mean and sd on rows of their own.

        ``columns`` picks some metrics (default: all), for reports too wide for one table.
        """
        failed = {f.case for f in self.failures}
        title = f"{self.protocol}: {len(self.results)} cases evaluated, {len(failed)} failed"
        title = f"{name} — {title}" if name else title
        shown = self.metric_names if columns is None else columns
        table = Table(title=title)
        table.add_column("case")
        for metric in shown:
            table.add_column(self.labels[metric][0], justify="right")
        for result in self.results:
            table.add_row(escape(result.case), *(self._format(result.metrics[n], n) for n in shown))
        summary = self.summary()
        table.add_section()
        table.add_row("mean", *(self._format(summary[n].mean, n) for n in shown), style="bold")
        table.add_row("sd", *(self._format(summary[n].sd, n) for n in shown))
        return table

    def _format(self, value: float, name: str) -> str:
        return "n/a" if math.isnan(value) else f"{value:.{self.labels[name][1]}f}"

    def to_csv(self, path: str | Path) -> Path:
        """One row per case: ``case``, the metrics (``nan``/``inf`` as such), ``error`` for failed cases."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", *self.metric_names, "error"])
        reasons: dict[str, list[str]] = {}
        for failure in self.failures:
            reasons.setdefault(failure.case, []).append(failure.reason)
        for result in self.results:
            error = " ".join(reasons.pop(result.case, []))
            writer.writerow([result.case, *(repr(float(result.metrics[n])) for n in self.metric_names), error])
        for case, reason in reasons.items():
            writer.writerow([case, *([""] * len(self.metric_names)), " ".join(reason)])
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




def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
