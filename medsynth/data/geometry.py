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

_CHAIN_KEY = "medsynth_planar_thickness"  # in a grid tensor's meta: the 2D input's slice thickness, or None


class ModelGrid:
    """RAS orientation then resampling to ``spacing`` mm, with the exact inverse.

    MONAI checks that an inverse is taken by the very transform instance that applied the forward
    step, so one grid object does both (one transform chain per interpolation mode). A 2D image
    (X, Y) is a one-slice volume (X, Y, 1) taken in its own plane: it is resampled in plane to the
    model's first two spacings and neither reoriented nor resampled across the plane.
    MONAI's transforms keep per-call state, so calls from several threads (``translate --workers``) take turns.
    """

    def __init__(self, spacing: Sequence[float]) -> None:
        self.spacing = tuple(float(s) for s in spacing)
        self._chains: dict[tuple, Compose] = {}
        self._lock = threading.Lock()

    def _chain(self, mode: str, thickness: float | None = None) -> Compose:
        key = (mode, thickness)
        if key not in self._chains:
            if thickness is None:
                self._chains[key] = Compose([Orientation(axcodes="RAS", labels=None),
                                             Spacing(pixdim=self.spacing, mode=mode, padding_mode="border")])
            else:
                self._chains[key] = Compose([Spacing(pixdim=(*self.spacing[:2], thickness), mode=mode,
                                                     padding_mode="border")])
        return self._chains[key]

    def forward(self, array: np.ndarray, meta: ImageMeta, mode: str = "bilinear") -> MetaTensor:
        """``array`` (on the grid of ``meta``; (X, Y, Z) or a 2D (X, Y)) as a (1, X, Y, Z) MetaTensor on the
        model grid (Z = 1 for a 2D image)."""
        planar = np.ndim(array) == 2
        values = np.asarray(array)[..., None] if planar else array
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None],
                            affine=torch.as_tensor(meta.affine, dtype=torch.float64))
        thickness = (float(np.linalg.norm(meta.affine[:3, 2])) or 1.0) if planar else None
        with self._lock:
            output = self._chain(mode, thickness)(tensor)
        output.meta[_CHAIN_KEY] = thickness
        return output

    def inverse(self, values: torch.Tensor, reference: MetaTensor, mode: str = "bilinear") -> np.ndarray:
        """Resample ``values`` (C, X, Y, Z on the model grid of ``reference``) back onto the input grid:
        (C, X, Y, Z), or (C, X, Y) for a 2D input."""
        output = MetaTensor(values.detach().float().cpu(), meta=copy.deepcopy(reference.meta),
                            applied_operations=copy.deepcopy(reference.applied_operations))
        thickness = reference.meta.get(_CHAIN_KEY)
        with self._lock:
            restored = np.asarray(self._chain(mode, thickness).inverse(output).as_tensor().numpy(), dtype=np.float32)
        return restored[..., 0] if thickness is not None else restored


def ras_spacing(meta: ImageMeta) -> tuple[float, ...]:
    """Voxel size along R, A, S after reorientation (spacing permuted to the RAS axis order)."""
    ornt = np.abs(meta.affine[:3, :3]).argmax(axis=0)  # world axis each voxel axis mostly follows
    spacing = np.linalg.norm(meta.affine[:3, :3], axis=0)  # a 2D image's third column: its thickness
    out = np.empty(3)
    out[ornt] = spacing
    return tuple(float(v) for v in out)


def median_spacing(metas: Sequence[ImageMeta]) -> tuple[float, ...]:
    """The default model spacing: the per-axis median over the training set (nnU-Net's choice)."""
    return tuple(float(v) for v in np.median(np.array([ras_spacing(m) for m in metas]), axis=0))


def model_grid(metas: Sequence[ImageMeta], spacing: Sequence[float] | None = None, min_spacing: float = 0.0
               ) -> ModelGrid:
    """The one rule every family's model grid follows: ``spacing`` when given, else the training images'
    median spacing (:func:`median_spacing`) no finer than ``min_spacing`` mm along any axis."""
    if spacing:
        return ModelGrid(spacing)
    return ModelGrid(tuple(max(s, min_spacing) for s in median_spacing(metas)))
