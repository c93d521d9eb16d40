"""Per-tissue errors of a synthetic CT: where a no-context model fails, overall MAE hides it.

Tissue classes come from the *reference* CT, inside the body mask ``m``:
air ``y < −200`` HU, soft tissue ``−200 ≤ y ≤ 200`` HU, bone ``y > 200`` HU. An MR-intensity
lookup table can score a fair overall MAE while confusing bone with air (both are dark on MR);
bone MAE and bone Dice expose that. Errors are on raw HU, like the overall MAE.

A class with no voxels has no error: its value is NaN, which the report shows as such and leaves
out of the cohort means.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medsynth.errors import InputError
from medsynth.metrics.synthrad import synthrad2023

AIR_MAX_HU = -200.0
BONE_MIN_HU = 200.0


def tissue_classes(ref: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of air, soft tissue and bone by the reference HU, restricted to the body mask."""
    ref, mask = np.asarray(ref), np.asarray(mask) > 0
    return {
        "air": mask & (ref < AIR_MAX_HU),
        "soft": mask & (ref >= AIR_MAX_HU) & (ref <= BONE_MIN_HU),
        "bone": mask & (ref > BONE_MIN_HU),
    }


def tissue_mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``mae_<tissue>`` = Σ_{v ∈ T} |y − ŷ| / |T| for each reference tissue class T; NaN if T is empty."""
    pred, ref = _same_shape(pred, ref, mask)
    error = np.abs(ref.astype(np.float64) - pred.astype(np.float64))
    return {f"mae_{name}": _mean_or_nan(error[region]) for name, region in tissue_classes(ref, mask).items()}


def bone_dice(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Dice = 2|P ∩ B| / (|P| + |B|) with P = {ŷ > 200 HU} and B = {y > 200 HU} inside the mask.

    NaN when neither volume has bone in the mask (nothing to overlap); 0 when only one has.
    """
    pred, ref = _same_shape(pred, ref, mask)
    inside = np.asarray(mask) > 0
    pred_bone, ref_bone = inside & (pred > BONE_MIN_HU), inside & (ref > BONE_MIN_HU)
    total = int(pred_bone.sum()) + int(ref_bone.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int((pred_bone & ref_bone).sum()) / total


def tissue_metrics(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``mae_air``, ``mae_soft``, ``mae_bone`` and ``bone_dice`` of one case."""
    return {**tissue_mae(pred, ref, mask), "bone_dice": bone_dice(pred, ref, mask)}


def validation_rows(cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[str, float]]:
    """Per case of (prediction HU, reference HU, body mask): the SynthRAD2023 MAE, PSNR and SSIM and the bone
    Dice, as the families validate. ``cases`` is consumed one at a time, so a generator holds one prediction
    at once."""
    return [{**synthrad2023(pred, ref, mask), "bone_dice": bone_dice(pred, ref, mask)} for pred, ref, mask in cases]


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """The NaN-aware mean of each metric over ``rows`` (a case without bone does not void the bone Dice)."""
    return {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}


def validation_scores(cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Means over ``cases`` of :func:`validation_rows`."""
    return mean_rows(validation_rows(cases))


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _same_shape(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if not pred.shape == ref.shape == np.shape(mask):
        raise InputError(f"prediction {pred.shape}, reference {ref.shape} and mask {np.shape(mask)} differ "
                         "in shape; resample them onto one grid.")
    return pred, ref
