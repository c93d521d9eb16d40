"""Arrays on a medsynth grid <-> SimpleITK images, for the steps that use ITK's filters and registration.

medsynth keeps arrays in the file's (x, y, z) voxel order with a RAS+ affine; ITK wants (z, y, x)
arrays and an LPS+ origin, spacing and direction. The two conversions here are exact inverses, so
an image resampled by ITK onto ``to_sitk(reference)`` comes back on the reference's own voxel grid.
"""

from __future__ import annotations

import numpy as np

from medsynth.errors import InputError
from medsynth.io.volume import ImageMeta
from medsynth.io.world import RAS_LPS

_LPS = RAS_LPS[:3, :3]


def to_sitk(array: np.ndarray, meta: ImageMeta):
    """A 3D SimpleITK image of ``array`` (x, y, z, on the grid of ``meta``), float32 unless integer.

    Raises :class:`InputError` when the affine has sheared axes, which ITK's geometry cannot hold.
    """
    import SimpleITK as sitk

    array = np.asarray(array)
    if array.dtype.kind not in "iub":
        array = array.astype(np.float32, copy=False)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    linear = np.asarray(meta.affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{meta.source or 'image'}: its voxel axes are not orthogonal (sheared affine); "
                         "resample it onto an orthogonal grid first.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (_LPS @ direction).ravel()])
    image.SetOrigin([float(v) for v in _LPS @ np.asarray(meta.affine, dtype=np.float64)[:3, 3]])
    return image


def from_sitk(image) -> np.ndarray:
    """The voxels of a 3D SimpleITK image in (x, y, z) order (the inverse of :func:`to_sitk`'s layout)."""
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
