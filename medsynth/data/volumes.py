"""One way to prepare a volume for a network: model grid, normalisation, body mask.

Training (every volumetric family's cases) and inference (``translate``, ``attribute``) call the same
functions, so a network sees at inference exactly the preparation it was trained on:

- :func:`to_grid` resamples an image (bilinear) onto the :class:`~medsynth.data.geometry.ModelGrid` and keeps
  the geometry its way back needs (``ModelGrid.inverse``, exact); :func:`on_grid` is its values alone,
  :func:`mask_on_grid` / :func:`labels_on_grid` move masks and label maps (nearest neighbour);
- :func:`normalise_channels` scales each MR contrast on its own foreground (by default its body mask) and
  windows a CT; :func:`normalisation_region` is the region VA-GAN's scale comes from;
  :func:`fit_mr_intensity` fits histogram landmarks on the training MRs over the voxels they are scaled on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from monai.data import MetaTensor

from medsynth.data.bodymask import body_mask
from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import (
    Intensity,
    MRIntensity,
    foreground_values,
    mr_scaling_body,
    normalise_mr_body,
)
from medsynth.errors import InputError
from medsynth.io.image import ImageMeta, Volume


@dataclass
class GridImage:
    """An image on the model grid, and the geometry (no voxels) that takes an output back to the input's grid."""

    values: np.ndarray  # (X, Y, Z) float32; Z = 1 for a 2D image
    geometry: MetaTensor  # the model grid's meta and the operations to invert: ``grid.inverse(output, geometry)``


def to_grid(grid: ModelGrid, volume: Volume, release: bool = False) -> GridImage:
    """``volume`` resampled onto the model grid; with ``release`` its array is emptied as soon as it has
    been resampled (a CT-sized input is then held once, not twice)."""
    moved = grid.forward(volume.array, volume.meta)
    _check_extent(volume, moved.shape[1:], grid)
    if release:
        volume.array = np.empty((0,) * volume.array.ndim, np.float32)
    return GridImage(moved.as_tensor().numpy()[0],
                     MetaTensor(torch.zeros(1), meta=moved.meta, applied_operations=moved.applied_operations))


def _check_extent(volume: Volume, shape: Sequence[int], grid: ModelGrid) -> None:
    """An image whose field of view shrinks to under two model-grid voxels along an axis it spans (a header
    that says 0.02 mm where 1 mm was meant) cannot be translated: :class:`InputError` naming the file."""
    spanned = [n for n in volume.array.shape if n > 1]
    if sum(n >= 2 for n in shape) >= len(spanned):
        return
    extent = np.linalg.norm(np.asarray(volume.meta.affine)[:3, :3], axis=0)[:volume.array.ndim] \
        * np.asarray(volume.array.shape)
    raise InputError(f"{volume.path}: its field of view ({' x '.join(f'{e:.3g}' for e in extent)} mm) is less than "
                     f"two voxels of the model grid ({' x '.join(f'{s:g}' for s in grid.spacing)} mm) along an "
                     "axis; check the voxel size in its header.")


def on_grid(grid: ModelGrid, volume: Volume) -> np.ndarray:
    """The image of ``volume`` on the model grid, (X, Y, Z) float32 (Z = 1 for a 2D image)."""
    return to_grid(grid, volume).values


def channels_on_grid(grid: ModelGrid, case: Mapping[str, Volume], roles: Sequence[str]) -> np.ndarray:
    """The images ``roles`` of one case (e.g. its MR contrasts, in channel order) on the model grid, (C, X, Y, Z)."""
    return np.stack([on_grid(grid, case[role]) for role in roles])


def mask_on_grid(grid: ModelGrid, mask: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """A mask (voxels > 0.5 inside) on the grid of ``meta`` moved onto the model grid (nearest neighbour),
    (X, Y, Z) bool."""
    return grid.forward(mask, meta, mode="nearest").numpy()[0] > 0.5


def labels_on_grid(grid: ModelGrid, labels: Volume) -> np.ndarray:
    """A label map on the model grid (nearest neighbour), (1, X, Y, Z) uint8."""
    return np.rint(grid.forward(labels.array, labels.meta, mode="nearest").numpy()).astype(np.uint8)


def normalise_source(image: np.ndarray, intensity: Intensity, foreground: np.ndarray | None = None) -> np.ndarray:
    """One network input channel (X, Y, Z) in [-1, 1]: an MR scaled on ``foreground`` (default: its own body,
    :func:`~medsynth.data.intensity.normalise_mr_body`), a CT windowed."""
    if isinstance(intensity, MRIntensity):
        return normalise_mr_body(intensity, image) if foreground is None else intensity.normalise(image, foreground)
    return intensity.normalise(image)


def normalise_channels(image: np.ndarray, intensity: Intensity, foreground: np.ndarray | None = None) -> np.ndarray:
    """Every channel of a (C, X, Y, Z) image by :func:`normalise_source`: each MR contrast on its own body
    (or on the one ``foreground``), so training scales a case exactly as ``translate`` does."""
    return np.stack([normalise_source(channel, intensity, foreground) for channel in image])


def fit_mr_intensity(intensity: MRIntensity, channels: Iterable[np.ndarray],
                     region: Callable[[np.ndarray], np.ndarray] | None = None) -> MRIntensity:
    """``intensity`` with its histogram landmarks fitted (:meth:`~medsynth.data.intensity.MRIntensity.fit_landmarks`)
    on the training MR ``channels`` ((X, Y, Z) each, on the model grid), each over the voxels it is scaled on:
    ``region(channel)`` (a boolean mask), by default its own body as :func:`normalise_source` takes it. The one
    rule of every family, so that the landmarks stored in the model match what translate and attribute do.
    Other scalings come back unchanged, and no mask is computed for them."""
    where = region or (lambda channel: mr_scaling_body(intensity, channel))
    return intensity.fit_landmarks(foreground_values(channel, where(channel)) for channel in channels)


class IntensityRegion(StrEnum):
    """Voxels whose percentiles (or mean and sd) scale each image to [-1, 1] (VA-GAN).

    ``image`` (default): all voxels, so the scale comes from background and the brightest tissue and
    a disease inside the brain cannot move it; ``body``: the body mask, as the translation families do.
    On T1 MR the body mask can shrink to the brain, whose intensities the disease changes, and the
    critic then learns the shifted scale instead of the anatomy.
    """

    IMAGE = "image"
    BODY = "body"


def normalisation_region(image: np.ndarray, region: IntensityRegion) -> np.ndarray:
    """Boolean mask of the voxels that set the intensity scale of ``image``."""
    if IntensityRegion(region) is IntensityRegion.BODY:
        return body_mask(image, modality="mr")
    return np.ones(image.shape, dtype=bool)
