"""Agreement of maps and label images: normalised cross-correlation and per-label Dice."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medsynth.errors import InputError


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation (Pearson's r) of two images over the mask (all voxels if None).

    NCC = Σ (a − ā)(b − b̄) / sqrt(Σ (a − ā)² · Σ (b − b̄)²), means and sums over the mask, in [−1, 1].
    NaN when either image is constant there (the correlation is undefined).

    For VA-GAN the map M(x) *removes* the disease effect, so it is compared with the negated
    ground-truth effect: ``ncc(map, -effect)`` is +1 for a perfect map.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or (mask is not None and np.shape(mask) != a.shape):
        raise InputError(f"cannot correlate images of shapes {a.shape} and {b.shape}"
                         + ("" if mask is None else f" with a mask of shape {np.shape(mask)}")
                         + "; put them on one grid.")
    if mask is not None:
        inside = np.asarray(mask) > 0
        a, b = a[inside], b[inside]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


def dice_per_label(pred_labels: np.ndarray, ref_labels: np.ndarray,
                   labels: Iterable[int]) -> dict[int, float]:
    """Dice = 2|P_k ∩ R_k| / (|P_k| + |R_k|) for each label k; NaN for a label absent from both."""
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise InputError(f"label maps of shapes {pred_labels.shape} and {ref_labels.shape} cannot be "
                         "compared; put them on one grid.")
    scores = {}
    for label in labels:
        pred_k, ref_k = pred_labels == label, ref_labels == label
        total = int(pred_k.sum()) + int(ref_k.sum())
        scores[int(label)] = 2.0 * int((pred_k & ref_k).sum()) / total if total else float("nan")
    return scores
