"""What every file format reads into and writes from: an array with its geometry.

Arrays are kept in the file's own voxel order, with a nibabel-style ``affine`` mapping voxel indices
to RAS+ world millimetres. NIfTI inputs keep their qform and sform matrices and codes exactly; ITK
formats (MHA, NRRD) and DICOM series, which are LPS+, are converted to the same RAS+ convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CT_RANGE = (-1024, 3071)


@dataclass(frozen=True)
class ImageMeta:
    """Everything needed to write an array back onto the grid it came from."""

    affine: np.ndarray
    shape: tuple[int, ...]
    qform: np.ndarray | None = None
    sform: np.ndarray | None = None
    qform_code: int = 1
    sform_code: int = 1
    xyzt_units: int = 10  # mm and seconds, the NIfTI default for medical images
    source: str = field(default="", compare=False)
    stored_shape: tuple[int, ...] | None = field(default=None, compare=False)  # on disk, trailing 1s kept

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, ...], source: str = "") -> ImageMeta:
        """Geometry of a new image in scanner space (qform and sform codes 1)."""
        affine = np.asarray(affine, dtype=np.float64)
        return cls(affine=affine, shape=tuple(int(s) for s in shape), source=source)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        ndim = len(self.shape)
        return tuple(float(v) for v in np.linalg.norm(self.affine[:ndim, :ndim], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"``."""
        from nibabel.orientations import aff2axcodes  # nibabel costs a third of a second; few callers need it

        return "".join(aff2axcodes(self.affine))


@dataclass
class Volume:
    """An image array (float32, file voxel order) with the geometry it came with."""

    array: np.ndarray
    meta: ImageMeta
    path: Path | None = None


def describe_pixels(components: Sequence[int], dtype: np.dtype, rgb: bool = False) -> str:
    """What a voxel holds, in words: ``RGB colour pixels``, ``complex values``, ``vectors of 3 components``."""
    dtype = np.dtype(dtype)
    if dtype.names:
        return f"{'RGB' if len(dtype.names) == 3 else 'RGBA'} colour pixels ({len(dtype.names)} channels per voxel)"
    if dtype.kind == "c":
        return "complex values (real and imaginary parts per voxel)"
    count = int(np.prod(components)) if len(components) else 1
    if rgb:
        return f"{'RGB' if count == 3 else 'RGBA'} colour pixels ({count} channels per voxel)"
    return f"vectors of {count} components per voxel"
