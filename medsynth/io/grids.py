"""One check that two images share a grid, and one reader of user-supplied masks on an image's grid.

Every pairing of images — a mask with its image, a prediction with its reference, MR/CT pairs of a data set, the
members of an ensemble's input — asks the same question with the same tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import InputError
from medsynth.io.image import Volume, read_image

GRID_TOLERANCE_MM = 1e-4  # largest difference of any affine entry between two images on "the same" grid


def grid_mismatch(volume: Volume, reference: Volume) -> str | None:
    """Why ``volume`` is not on ``reference``'s grid (shape, or an affine entry off by more than
    :data:`GRID_TOLERANCE_MM`), in words, or None when it is."""
    if tuple(volume.array.shape) != tuple(reference.array.shape):
        return f"shape {tuple(volume.array.shape)} differs from {tuple(reference.array.shape)}"
    deviation = float(np.max(np.abs(np.asarray(volume.meta.affine) - np.asarray(reference.meta.affine))))
    if deviation > GRID_TOLERANCE_MM:
        return f"affine differs by up to {deviation:.4g} mm (spacing, origin or orientation)"
    return None


def check_same_grid(volume: Volume, reference: Volume, role: str, remedy: str = "resample it onto that grid") -> None:
    """:class:`InputError` naming both files when ``volume`` (a ``role``) is not on ``reference``'s grid."""
    reason = grid_mismatch(volume, reference)
    if reason:
        raise InputError(f"{volume.path}: {role} {reason} of {reference.path}; {remedy}.")


def read_mask(path: Path, like: Volume, role: str = "mask") -> np.ndarray:
    """A user-supplied mask (voxels > 0 inside) of the image ``like``, on its grid, as booleans.

    Raises :class:`InputError` when it cannot be read, lies on another grid or is empty (``role`` names what
    it should cover: the body for a mask, the planning target volume for a target).
    """
    # An all-ones mask is constant yet valid, so the value checks for images do not apply.
    mask = read_image(path, ndim=like.array.ndim, check_values=False)
    check_same_grid(mask, like, role, "give it on the image's grid")
    inside = mask.array > 0
    if not inside.any():
        covers = {"mask": "the body", "target": "the planning target volume"}.get(role, f"the {role}'s region")
        raise InputError(f"{path}: the {role} is empty; give a {role} that covers {covers}.")
    return inside
