"""The model's grid: reorient to RAS, resample to the model spacing, and invert exactly.

MONAI's invertible ``Orientation`` and ``Spacing`` do the work; the inverse lands on the input's
own voxel grid (its shape by construction), and the writer puts back the input's affine and codes.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation, Spacing

from medsynth.io.image import ImageMeta


class ModelGrid:
    """RAS orientation then resampling to ``spacing`` mm, with the exact inverse.

    MONAI checks that an inverse is taken by the very transform instance that applied the forward
    step, so one grid object does both (one transform chain per interpolation mode). MONAI's
    transforms keep per-call state, so calls from several threads (``translate --workers``) take turns.
    """

    def __init__(self, spacing: Sequence[float]) -> None:
        self.spacing = tuple(float(s) for s in spacing)
        self._chains: dict[str, Compose] = {}
        self._lock = threading.Lock()

    def _chain(self, mode: str) -> Compose:
        if mode not in self._chains:
            self._chains[mode] = Compose([Orientation(axcodes="RAS", labels=None),
                                          Spacing(pixdim=self.spacing, mode=mode, padding_mode="border")])
        return self._chains[mode]

    def forward(self, array: np.ndarray, meta: ImageMeta, mode: str = "bilinear") -> MetaTensor:
        """``array`` (on the grid of ``meta``) as a (1, X, Y, Z) MetaTensor on the model grid."""
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                            affine=torch.as_tensor(meta.affine, dtype=torch.float64))
        with self._lock:
            return self._chain(mode)(tensor)

    def inverse(self, values: torch.Tensor, reference: MetaTensor, mode: str = "bilinear") -> np.ndarray:
        """Resample ``values`` (C, X, Y, Z on the model grid of ``reference``) back onto the input grid."""
        output = MetaTensor(values.detach().float().cpu(), meta=copy.deepcopy(reference.meta),
                            applied_operations=copy.deepcopy(reference.applied_operations))
        with self._lock:
            restored = self._chain(mode).inverse(output)
        return np.asarray(restored.as_tensor().numpy(), dtype=np.float32)


def ras_spacing(meta: ImageMeta) -> tuple[float, ...]:
    """Voxel size along R, A, S after reorientation (spacing permuted to the RAS axis order)."""
    ornt = np.abs(meta.affine[:3, :3]).argmax(axis=0)  # world axis each voxel axis mostly follows
    spacing = np.asarray(meta.spacing[:3])
    out = np.empty(3)
    out[ornt] = spacing
    return tuple(float(v) for v in out)


def median_spacing(metas: Sequence[ImageMeta]) -> tuple[float, ...]:
    """The default model spacing: the per-axis median over the training set (nnU-Net's choice)."""
    return tuple(float(v) for v in np.median(np.array([ras_spacing(m) for m in metas]), axis=0))
