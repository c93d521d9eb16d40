"""Augmentations a real MR needs — bias field, gamma, intensity scale, noise, small rotations and scaling —
with MONAI's random transforms, drawn from a seed per training sample so that resume and DDP stay exact.

A new scanner or patient changes the MR in ways histogram standardisation cannot undo: a smooth bias field
across the body, a residual contrast change, noise. Small rotations and scalings stand for a head or body
positioned differently. The CT is only moved with the MR, never changed in intensity.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    Rand2DElastic,
    Rand3DElastic,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandGaussianNoise,
    RandScaleIntensity,
)


class PairedAugment:
    """Random MR intensity changes and a shared small affine for an (MR, CT) patch pair in [-1, 1].

    ``strength`` in [0, 1] scales how often each change is drawn (0: off). The MR's intensity changes
    act on ``mr + 1`` so that the background (-1) stays background; results are clipped to [-1, 1].
    ``anatomy`` in [0, 1] is how often an *anatomy* change is drawn on top, what multiplies few patients:
    a smooth elastic deformation (control points every 24 voxels, displacements up to 3 of them) with a
    wider rotation (±0.3 rad) and scaling (±20 %), the same for MR and CT.
    """

    def __init__(self, dims: int, strength: float = 0.5, max_rotation: float = 0.12, max_scale: float = 0.1,
                 anatomy: float = 0.0) -> None:
        self.strength, self.anatomy = float(strength), float(anatomy)
        self.elastic = _elastic(dims, self.anatomy) if self.anatomy > 0 else None
        p = self.strength
        self.intensity = Compose([
            RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=p),
            RandAdjustContrast(gamma=(0.7, 1.5), prob=p),
            RandScaleIntensity(factors=0.15, prob=p),
            RandGaussianNoise(std=0.03, prob=p),
        ])
        rotation = (max_rotation,) * (3 if dims == 3 else 1)
        self.spatial = RandAffine(prob=p, rotate_range=rotation, scale_range=(max_scale,) * dims,
                                  mode="bilinear", padding_mode="border")

    def __call__(self, mr: np.ndarray, ct: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Augmented copies of ``mr`` ((C, *spatial): one channel per contrast) and ``ct`` ((1, *spatial)),
        float32; the same ``seed`` gives the same result."""
        if self.elastic is not None:
            self.elastic.set_random_state(seed=(seed + 2) % 2**31)
            pair = np.asarray(self.elastic(np.concatenate([mr, ct]))).astype(np.float32)
            mr, ct = pair[:-1], pair[-1:]
        if self.strength <= 0:
            return mr, ct
        self.spatial.set_random_state(seed=seed)
        self.intensity.set_random_state(seed=(seed + 1) % 2**31)
        moved = np.asarray(self.spatial(np.concatenate([mr, ct]))).astype(np.float32)
        shifted = np.asarray(self.intensity(moved[:-1] + 1.0)).astype(np.float32) - 1.0
        return np.clip(shifted, -1.0, 1.0), np.clip(moved[-1:], -1.0, 1.0)


def _elastic(dims: int, prob: float) -> Rand2DElastic | Rand3DElastic:
    """MONAI's elastic deformation with a wide affine: B-spline-like control grid in 2D, smoothed noise in 3D."""
    if dims == 2:
        return Rand2DElastic(spacing=(24, 24), magnitude_range=(0.0, 3.0), prob=prob, rotate_range=0.3,
                             scale_range=(0.2, 0.2), mode="bilinear", padding_mode="border")
    return Rand3DElastic(sigma_range=(6.0, 8.0), magnitude_range=(0.0, 150.0), prob=prob,
                         rotate_range=(0.3, 0.3, 0.3), scale_range=(0.2, 0.2, 0.2), mode="bilinear",
                         padding_mode="border")


def thick_slice_weights(factor: float, phase: float, context_slices: int) -> np.ndarray:
    """How an MR acquired with slices ``factor`` times thicker looks on the thin slices' grid.

    Thick slice j averages the thin slices over [c_j − f/2, c_j + f/2] (a box profile, c_j = (phase + j)·f,
    f = ``factor``, in thin-slice units, ``phase`` in [0, 1)); the thick slices are then interpolated
    linearly back onto the thin positions −k…k, as a model grid does with a thick-slice input. Returns the
    (2k+1, 2(k+m)+1) weights from the thin slices −(k+m)…k+m, m = :func:`thick_slice_margin`; every row
    sums to 1.
    """
    k, m = context_slices, thick_slice_margin(factor)
    thin = np.arange(-(k + m), k + m + 1, dtype=np.float64)
    weights = np.zeros((2 * k + 1, thin.size))
    for row, t in enumerate(range(-k, k + 1)):
        j = np.floor(t / factor - phase)
        for centre, share in ((phase + j) * factor, 1.0 - (t / factor - phase - j)), \
                             ((phase + j + 1) * factor, t / factor - phase - j):
            overlap = np.clip(np.minimum(thin + 0.5, centre + factor / 2) - np.maximum(thin - 0.5, centre - factor / 2),
                              0.0, None)
            weights[row] += share * overlap / overlap.sum()
    return weights


def thick_slice_margin(factor: float) -> int:
    """Thin slices needed beyond the 2.5D slab on either side by :func:`thick_slice_weights`."""
    return int(np.ceil(1.5 * factor + 0.5))


class SliceThickness:
    """Random thicker MR slices for a 2D/2.5D model (slice-thickness augmentation, after TorchIO's
    ``RandomAnisotropy``): with probability ``prob`` a sample's MR slab is replaced by what a ``factor``-times
    thicker acquisition (``factor`` uniform in ``factors``, a random slice phase) shows on the thin grid.

    A new scanner's MR often has thicker slices than the training data's; on the model grid their
    neighbouring slices are blends of one another and thin structures (a rib crossing the plane) are
    smeared along z. The CT target is left as it is: the model learns to answer the thin anatomy.
    """

    def __init__(self, prob: float = 0.0, factors: tuple[float, float] = (1.5, 2.5)) -> None:
        if not 0.0 <= prob <= 1.0 or not 1.0 <= factors[0] <= factors[1]:
            raise ValueError(f"slice thickness: prob in [0, 1] and 1 <= factors[0] <= factors[1], "
                             f"not {prob} and {factors}.")
        self.prob, self.factors = float(prob), (float(factors[0]), float(factors[1]))

    @property
    def margin(self) -> int:
        """Extra thin slices to cut on either side of a slab for :meth:`apply`; 0 when off."""
        return thick_slice_margin(self.factors[1]) if self.prob > 0 else 0

    def draw(self, rng: np.random.Generator) -> tuple[float, float] | None:
        """(factor, phase) of a thicker acquisition, or None for the slab as it is; draws nothing when off."""
        if self.prob <= 0 or rng.random() >= self.prob:
            return None
        return float(rng.uniform(*self.factors)), float(rng.random())

    def apply(self, slab: np.ndarray, channels: int, context_slices: int, draw: tuple[float, float] | None
              ) -> np.ndarray:
        """The (C·(2k+1), *patch) slab of a (C·(2(k+margin)+1), *patch) one cut with :attr:`margin` extra
        slices (contrast-major, as :func:`~medsynth.data.patches.cut_slab`), thickened by ``draw``."""
        extra = self.margin
        stack = slab.reshape(channels, -1, *slab.shape[1:])
        if draw is None:
            out = stack[:, extra:stack.shape[1] - extra]
        else:
            factor, phase = draw
            weights = thick_slice_weights(factor, phase, context_slices)
            skip = extra - thick_slice_margin(factor)
            out = np.einsum("os,cs...->co...", weights, stack[:, skip:stack.shape[1] - skip])
        return np.ascontiguousarray(out.reshape(-1, *slab.shape[1:]), dtype=np.float32)
