"""Reconstruction losses of a synthetic CT against its reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bone_weighted_l1(fake: Tensor, target: Tensor, bone_min: float, bone_weight: float = 1.0) -> Tensor:
    """L1 in which voxels of bone in the reference count ``bone_weight`` times:

        L = Σ w·|G(x) − y| / N,   w = bone_weight where y > bone_min, else 1.

    ``fake`` and ``target`` are any matching shape (normalised CT); ``bone_min`` is the bone threshold in the
    same units. Plain L1 (``bone_weight`` 1) is minimised by the conditional median, which calls a voxel
    bone only when bone is more likely than not there; with little training data the network stays
    unsure around thin cortical bone and predicts soft tissue. A weight w moves the point at which a
    voxel is predicted as bone to a probability of 1/(1 + w) (the weighted median). Returns a scalar.
    """
    if bone_weight == 1.0:
        return F.l1_loss(fake.float(), target.float())
    weights = torch.where(target > bone_min, bone_weight, 1.0)
    return (weights * (fake.float() - target.float()).abs()).mean()
