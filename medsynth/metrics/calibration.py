"""What a spread map means in HU: the error a voxel's spread predicts, fitted on cases with a reference CT.

A spread map (the standard deviation of test-time-augmentation or MC-dropout passes, in HU) says where the
network is unsure, not how wrong it is. :func:`fit_error_calibration` learns that from calibration cases
(the run's validation cases, or any given with their CT): the body voxels are binned by spread (quantile
bins), the mean absolute error of each bin is the expected error at the bin's mean spread, and the curve
is made non-decreasing (more spread never promises less error). Between bin centres the curve is linear,
beyond the last it continues with the slope of its last segment (a wider spread than any calibration voxel
had is extrapolated, never clipped to the largest error seen).

Per case, the predicted MAE is the body mean of the expected-error map. Its interval comes from how the
calibration cases' true MAE stood to their predicted MAE: the smallest to the largest ratio, each side
widened by ``SMALL_SAMPLE_MARGIN`` when fewer than ``FEW_CASES`` cases were seen — with one or two cases
nobody knows the case-to-case scatter, and the interval must say so by being wide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FEW_CASES = 5
SMALL_SAMPLE_MARGIN = 0.25


@dataclass(frozen=True)
class ErrorCalibration:
    """Expected absolute error (HU) as a function of spread (HU), and the per-case MAE ratios behind intervals.

    ``spread_hu``/``error_hu``: the curve's points (increasing spread, non-decreasing error); ``case_ratios``:
    true MAE over predicted MAE of each calibration case; ``spread``: what spread it was fitted for
    (``"tta"``, ``"mc-dropout"``, ``"tta+mc-dropout"``), since another kind of spread has another scale.
    """

    spread_hu: tuple[float, ...]
    error_hu: tuple[float, ...]
    case_ratios: tuple[float, ...]
    spread: str
    cases: tuple[str, ...] = field(default=())

    def expected_error(self, spread: np.ndarray) -> np.ndarray:
        """The expected absolute error (HU, float32) of each voxel of a spread map (HU), same shape."""
        x, y = np.asarray(self.spread_hu), np.asarray(self.error_hu)
        values = np.interp(spread, x, y)
        if x.size > 1 and x[-1] > x[-2]:
            slope = max((y[-1] - y[-2]) / (x[-1] - x[-2]), 0.0)
            beyond = spread > x[-1]
            values[beyond] = y[-1] + slope * (spread[beyond] - x[-1])
        return values.astype(np.float32)

    def predicted_mae(self, expected: np.ndarray, body: np.ndarray) -> tuple[float, float, float]:
        """(predicted MAE, low, high) in HU of a case from its expected-error map and body mask."""
        predicted = float(expected[body].mean()) if body.any() else 0.0
        low, high = min(self.case_ratios), max(self.case_ratios)
        if len(self.case_ratios) < FEW_CASES:
            low, high = low * (1.0 - SMALL_SAMPLE_MARGIN), high * (1.0 + SMALL_SAMPLE_MARGIN)
        return predicted, predicted * low, predicted * high

    def to_json(self) -> dict[str, Any]:
        return {"spread_hu": list(self.spread_hu), "error_hu": list(self.error_hu),
                "case_ratios": list(self.case_ratios), "spread": self.spread, "cases": list(self.cases)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ErrorCalibration:
        return cls(tuple(map(float, document["spread_hu"])), tuple(map(float, document["error_hu"])),
                   tuple(map(float, document["case_ratios"])), str(document["spread"]),
                   tuple(map(str, document.get("cases", ()))))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (Mann-Whitney U, ties averaged);
    NaN when either class is empty."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spread_kind(tta: bool, flips: bool, mc_dropout: bool, samples: int) -> str | None:
    """The kind of spread a translation with these settings measures (None: no spread at all): test-time
    flips when asked for and the model has training flips, MC dropout when the model has dropout and
    ``samples`` ≥ 2 passes are asked for."""
    if samples < 2:
        return None
    kinds = [kind for kind, on in (("tta", tta and flips), ("mc-dropout", mc_dropout)) if on]
    return "+".join(kinds) or None


def fit_error_calibration(cases: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], spread: str,
                          bins: int = 20) -> ErrorCalibration:
    """Fit the spread → expected error curve on ``cases`` of (case id, |sCT − CT| in HU, spread in HU, reference
    body mask, output body mask).

    The curve is fitted in the reference body (where the error is defined, the evaluation protocol's mask);
    each case's ratio is its MAE there over the mean expected error in the *output's* body mask — the mask
    a translation without CT has (the sCT's own) — so that a predicted MAE made the translate way is
    corrected for the difference. Raises ValueError when no case has body voxels.
    """
    names, errors, spreads, per_case = [], [], [], []
    for name, error, std, body, output_body in cases:
        if body.any() and output_body.any():
            names.append(name)
            errors.append(error[body].astype(np.float64))
            spreads.append(std[body].astype(np.float64))
            per_case.append((float(errors[-1].mean()), std[output_body]))
    if not names:
        raise ValueError("no calibration case has body voxels")
    error, std = np.concatenate(errors), np.concatenate(spreads)
    edges = np.unique(np.quantile(std, np.linspace(0.0, 1.0, bins + 1)))
    which = np.clip(np.searchsorted(edges, std, side="right") - 1, 0, max(edges.size - 2, 0))
    present = np.unique(which)
    centres = np.array([std[which == b].mean() for b in present])
    means = np.maximum.accumulate(np.array([error[which == b].mean() for b in present]))
    curve = ErrorCalibration(tuple(centres), tuple(means), (1.0,), spread, tuple(names))
    ratios = tuple(mae / max(float(curve.expected_error(s).mean()), 1e-6) for mae, s in per_case)
    return ErrorCalibration(curve.spread_hu, curve.error_hu, ratios, spread, tuple(names))
