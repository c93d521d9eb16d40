"""MHA/MHD and NRRD files (SimpleITK), LPS+ on disk and RAS+ in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import InputError, UsageError
from medsynth.io.contract import ImageFormat, Origin
from medsynth.io.itk import to_sitk
from medsynth.io.outputs import atomic_path
from medsynth.io.volume import ImageMeta, Volume, describe_pixels
from medsynth.io.world import RAS_LPS

STAMP_KEY = "medsynth_model"  # the header field holding what made the image


class MetaImage(ImageFormat):
    """``.mha``/``.mhd`` and ``.nrrd``/``.nhdr`` (``.mha`` and ``.nrrd`` written); the stamp is the header
    field ``medsynth_model``. A sheared affine, which ITK's geometry cannot hold, is not written."""

    name, title, hint = "mha", "MHA/NRRD", ".mha, .nrrd"
    suffixes = (".mha", ".mhd", ".nrrd", ".nhdr")
    written = (".mha", ".nrrd")

    def read(self, path: Path, series: tuple[str, ...] = ()) -> Volume:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw C++ warnings never reach the user
        return _from_sitk(sitk.ReadImage(str(path)), path)

    def write(self, path: Path, values: np.ndarray, meta: ImageMeta, dtype: np.dtype | type,
              stamp: str | None = None, origin: Origin | None = None) -> Path:
        import SimpleITK as sitk

        array = values.astype(dtype, copy=False)
        try:  # a slice keeps its place in space as (X, Y, 1)
            image = to_sitk(array[..., None] if array.ndim == 2 else array, meta)
        except InputError as error:
            raise UsageError(f"{path}: the image grid has sheared voxel axes, which MHA/NRRD cannot hold; "
                             "write NIfTI.") from error
        if stamp:
            image.SetMetaData(STAMP_KEY, stamp)
        with atomic_path(path, path.suffix) as partial:
            sitk.WriteImage(image, str(partial), True)
        return path

    def read_stamp(self, path: Path) -> str | None:
        import SimpleITK as sitk

        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return reader.GetMetaData(STAMP_KEY) if reader.HasMetaDataKey(STAMP_KEY) else None
        except (OSError, RuntimeError, ValueError):
            return None


def _from_sitk(image, path: Path) -> Volume:
    """ITK is LPS+ with arrays in (z, y, x) order; convert to RAS+ and (x, y, z)."""
    import SimpleITK as sitk

    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        rgb = image.GetPixelID() == sitk.sitkVectorUInt8 and components in (3, 4)
        raise InputError(f"{path}: holds {describe_pixels((components,), np.dtype(np.float32), rgb)}; a "
                         "single-channel greyscale (scalar) image is needed: convert it to one channel first.")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    ndim = image.GetDimension()
    array = np.transpose(array, tuple(range(ndim - 1, -1, -1)))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    k = min(ndim, 3)
    lps[:k, :k] = (direction * spacing[None, :])[:k, :k]
    lps[:k, 3] = origin[:k]
    return Volume(array, ImageMeta.from_affine(RAS_LPS @ lps, array.shape, source=str(path)), path)
