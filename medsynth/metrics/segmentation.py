"""Segmentation-based sCT metrics as SynthRAD2025 reports them — Dice and HD95 of structures segmented on the sCT
against the same structures on the CT — with tissue classes from HU instead of a downloaded segmenter.

SynthRAD2025 segments anatomical structures with TotalSegmentator; medsynth cannot download it, so these are
**HU-class** metrics and named so (``hu_dice_*``, ``hu_hd95_*_mm``): bone (> 200 HU), air (< −200 HU, lung and
cavities included) and soft tissue (−200 … 200 HU), each thresholded alike on the sCT and the CT inside the body
mask. Computed with MONAI's ``compute_dice`` and ``compute_hausdorff_distance`` (95th percentile, in mm with the
voxel spacing), on the mask's bounding box. A class absent from the reference is NaN; absent from the sCT only,
Dice 0 and HD95 NaN (no surface to measure from).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from medsynth.metrics.tissue import AIR_MAX_HU, BONE_MIN_HU

CLASSES = ("bone", "air", "soft")


def hu_classes(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, *shape) booleans: bone, air and soft tissue of ``hu`` inside ``mask``."""
    inside = np.asarray(mask) > 0
    return np.stack([inside & (hu > BONE_MIN_HU), inside & (hu < AIR_MAX_HU),
                     inside & (hu >= AIR_MAX_HU) & (hu <= BONE_MIN_HU)])


def hu_segmentation_metrics(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray,
                            spacing: Sequence[float]) -> dict[str, float]:
    """``hu_dice_<class>`` and ``hu_hd95_<class>_mm`` for bone, air and soft tissue (see the module)."""
    box = _bounding_box(np.asarray(mask) > 0)
    ours = torch.from_numpy(hu_classes(np.asarray(pred)[box], np.asarray(mask)[box]))[None].float()
    theirs = torch.from_numpy(hu_classes(np.asarray(ref)[box], np.asarray(mask)[box]))[None].float()
    present = ours.flatten(2).any(-1)[0] & theirs.flatten(2).any(-1)[0]
    with warnings.catch_warnings():  # MONAI warns of empty classes (NaN here, by design) and of its own API
        warnings.simplefilter("ignore")
        dice = compute_dice(ours, theirs, include_background=True, ignore_empty=True)[0]
        hd95 = compute_hausdorff_distance(ours, theirs, include_background=True, percentile=95,
                                          spacing=[float(s) for s in spacing])[0]
    results = {}
    for index, name in enumerate(CLASSES):
        results[f"hu_dice_{name}"] = float(dice[index])
        results[f"hu_hd95_{name}_mm"] = float(hd95[index]) if bool(present[index]) else float("nan")
    return results


def _bounding_box(inside: np.ndarray) -> tuple[slice, ...]:
    if not inside.any():
        return tuple(slice(None) for _ in inside.shape)
    spans = [np.flatnonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
             for axis in range(inside.ndim)]
    return tuple(slice(int(span[0]), int(span[-1]) + 1) for span in spans)
