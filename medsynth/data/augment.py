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
    """

    def __init__(self, dims: int, strength: float = 0.5, max_rotation: float = 0.12, max_scale: float = 0.1) -> None:
        self.strength = float(strength)
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
        if self.strength <= 0:
            return mr, ct
        self.spatial.set_random_state(seed=seed)
        self.intensity.set_random_state(seed=(seed + 1) % 2**31)
        moved = np.asarray(self.spatial(np.concatenate([mr, ct]))).astype(np.float32)
        shifted = np.asarray(self.intensity(moved[:-1] + 1.0)).astype(np.float32) - 1.0
        return np.clip(shifted, -1.0, 1.0), np.clip(moved[-1:], -1.0, 1.0)
