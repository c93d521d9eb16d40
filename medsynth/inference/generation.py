"""The generation core: FastGAN slices from seeded latents, one network pass each, and their display.

Slice ``i`` depends only on (seed, i, truncation): its latent vector comes from a generator seeded with
both, and the generator's noise injection draws from a torch RNG seeded the same way, one slice at a
time. Training previews and validation (``families/fastgan``) and the ``generate`` service
(``services/generate``) both draw slices here, so they agree slice for slice.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from medsynth.io.image import ImageMeta

DISPLAY_WINDOW_HU = (-1000.0, 1500.0)


def truncated_normal(rng: np.random.Generator, size: int, truncation: float | None) -> np.ndarray:
    """N(0, 1) samples; with ``truncation`` T every entry beyond |T| is redrawn until none is."""
    z = rng.standard_normal(size)
    while truncation is not None and np.any(outside := np.abs(z) > truncation):
        z[outside] = rng.standard_normal(int(outside.sum()))
    return z


def latent(seed: int, index: int, nz: int, truncation: float | None) -> np.ndarray:
    """The latent vector of slice ``index`` for ``seed``."""
    return truncated_normal(np.random.default_rng([seed, index]), nz, truncation)


@torch.no_grad()
def synthesise(generator: nn.Module, nz: int, indices: Iterable[int], seed: int, truncation: float | None,
               device: torch.device) -> torch.Tensor:
    """Slices (N, R, R) in [-1, 1] on the CPU, one network pass each, in evaluation mode.

    The global torch RNG is left as it was (training calls this for previews and must stay resumable).
    """
    was_training = generator.training
    generator.eval()
    images = []
    for index in indices:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(np.random.default_rng([seed, index, 1]).integers(2**62)))
            z = torch.from_numpy(latent(seed, index, nz, truncation)).float()[None].to(device)
            images.append(generator(z)[0, 0].float().cpu())
    generator.train(was_training)
    return torch.stack(images)


def display_slice(hu: np.ndarray) -> np.ndarray:
    """A RAS slice (x, y) as a uint8 image in the radiological convention (left on the right, anterior up)."""
    from medsynth.viz import mid_slices, window

    return window(mid_slices(np.asarray(hu)[:, :, None]).axial, *DISPLAY_WINDOW_HU)


def slice_meta(spacing: tuple[float, float], thickness: float, resolution: int) -> ImageMeta:
    """Geometry of a generated slice: RAS, the training pixel spacing, centred on the origin."""
    affine = np.diag([float(spacing[0]), float(spacing[1]), float(thickness), 1.0])
    affine[:2, 3] = -(resolution - 1) / 2 * np.asarray(spacing, dtype=float)
    return ImageMeta.from_affine(affine, (resolution, resolution))
