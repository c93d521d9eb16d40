"""Tissue classes of a reference CT, the target of the anatomy-aware losses (SynthRAD2025 winners' practice).

Five classes by the CT's Hounsfield units, edges chosen at the midpoints between the tissues' typical values:

=========  ==================  ==========================================================
class      HU                  what
=========  ==================  ==========================================================
air        y <= -900           outside air, sinuses, airways (about -1000)
lung       -900 < y <= -250    aerated lung parenchyma (-900 to -500) and its partial volume
fat        -250 < y <= -30     adipose tissue (about -100)
soft       -30 < y <= 200      muscle, organs, blood, CSF, brain (0 to 80), contrast-enhanced vessels
bone       y > 200             trabecular and cortical bone; the edge of the bone Dice (metrics/tissue.py)
=========  ==================  ==========================================================

On a T1-like MR air and cortical bone are both dark and fat and marrow both bright; the classes make a
network say which it sees, instead of averaging the two in HU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

TISSUE_NAMES = ("air", "lung", "fat", "soft", "bone")
TISSUE_EDGES_HU = (-900.0, -250.0, -30.0, 200.0)  # upper edge (inclusive) of each class but bone


def tissue_labels(hu: np.ndarray) -> np.ndarray:
    """The class index (0 air … 4 bone, int64) of every voxel of a CT in HU (any shape): the number of
    edges below the voxel's value."""
    return np.searchsorted(np.asarray(TISSUE_EDGES_HU), np.asarray(hu), side="left").astype(np.int64)


def tissue_labels_torch(ct: Tensor, edges: Tensor) -> Tensor:
    """:func:`tissue_labels` of a tensor whose class edges ``edges`` are in its own units (e.g. the normalised
    [-1, 1] CT of training); same shape, int64."""
    return torch.bucketize(ct, edges.to(ct.device, ct.dtype), right=False)
