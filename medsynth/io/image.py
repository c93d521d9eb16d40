"""One reader/writer contract: geometry goes in at read and comes back, unchanged, at write.

Arrays are kept in the file's own voxel order, with a nibabel-style ``affine`` mapping voxel indices
to RAS+ world millimetres. NIfTI inputs keep their qform and sform matrices and codes exactly; ITK
formats (MHA, NRRD) and DICOM series, which are LPS+, are converted to the same RAS+ convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from medsynth.errors import InputError, UsageError
from medsynth.io.outputs import atomic_path
from medsynth.io.world import RAS_LPS

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
CT_RANGE = (-1024, 3071)
_NIFTI_INTENT_VECTOR = 1007


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
        return "".join(nib.aff2axcodes(self.affine))


@dataclass
class Volume:
    """An image array (float32, file voxel order) with the geometry it came with."""

    array: np.ndarray
    meta: ImageMeta
    path: Path | None = None


def model_ndim(dims: int) -> int | tuple[int, int]:
    """The image dimensionalities a model of ``dims`` spatial dims reads (``read_image``'s ``ndim``): a 2D
    model also takes 2D images, (X, Y) or (X, Y, 1); a 3D model volumes only."""
    return (2, 3) if dims == 2 else 3


def read_image(path: str | Path, ndim: int | tuple[int, ...] = 3, check_values: bool = True,
               series: Sequence[str] = ()) -> Volume:
    """Read a NIfTI, MHA/NRRD file or DICOM series folder as float32 with its geometry.

    ``ndim`` is the spatial dimensionality accepted (trailing singleton axes are dropped first).
    ``series``: Series Instance UIDs, one of which picks the series of a DICOM folder holding several
    (:func:`medsynth.io.dicom.choose_series`). Raises :class:`InputError` with one clear sentence for
    anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path.")
    try:
        array, meta = _read_any(path, tuple(series))
    except InputError:
        raise
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot be read as an image ({reason[:160]}).") from error
    array = _drop_trailing_singletons(array, path, ndim)
    meta = _with_shape(meta, array.shape, path)
    if check_values:
        _check_values(array, path)
    return Volume(array=array, meta=meta, path=path)


def _read_any(path: Path, series: tuple[str, ...] = ()) -> tuple[np.ndarray, ImageMeta]:
    name = path.name.lower()
    if path.is_dir() or name.endswith(".dcm"):  # a series folder, or one DICOM file (a slice or a multi-frame)
        from medsynth.io.dicom import read_series

        array, affine, _ = read_series(path, series)
        return array, ImageMeta.from_affine(affine, array.shape, source=str(path))
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti(path)
    if name.endswith(ITK_SUFFIXES):
        return _read_itk(path)
    raise InputError(f"{path}: not a supported image (use .nii, .nii.gz, .mha, .nrrd or a DICOM folder).")


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageMeta]:
    image = nib.load(str(path))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image.")
    header = image.header
    dtype = header.get_data_dtype()
    components = image.shape[4:] if len(image.shape) > 4 else ()
    if dtype.names or dtype.kind == "c" or int(header["intent_code"]) == _NIFTI_INTENT_VECTOR \
            or any(c > 1 for c in components):
        raise InputError(f"{path}: holds {describe_pixels(components, dtype)}; a single-channel greyscale "
                         "(scalar) image is needed: convert it to one channel first.")
    array = np.asarray(image.dataobj, dtype=np.float32)
    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    meta = ImageMeta(
        affine=np.asarray(image.affine, dtype=np.float64),
        shape=array.shape,
        qform=None if qform is None else np.asarray(qform, dtype=np.float64),
        sform=None if sform is None else np.asarray(sform, dtype=np.float64),
        qform_code=int(qform_code or 0),
        sform_code=int(sform_code or 0),
        xyzt_units=int(header["xyzt_units"]),
        source=str(path),
    )
    return array, meta


def _read_itk(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw C++ warnings never reach the user
    return _from_sitk(sitk.ReadImage(str(path)), path)


def _from_sitk(image, path: Path) -> tuple[np.ndarray, ImageMeta]:
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
    return array, ImageMeta.from_affine(RAS_LPS @ lps, array.shape, source=str(path))


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


def _drop_trailing_singletons(array: np.ndarray, path: Path, ndim: int | tuple[int, ...]) -> np.ndarray:
    accepted = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if array.size == 0:  # before dropping axes: a (48, 48, 0) volume is empty, not a 1D image
        raise InputError(f"{path}: holds no voxels (shape {array.shape}); it holds no image.")
    while array.ndim > min(accepted) and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in accepted:
        wanted = " or ".join(f"{d}D" for d in accepted)
        raise InputError(f"{path}: is a {array.ndim}D image of shape {array.shape}; a {wanted} image is needed.")
    return array


def _with_shape(meta: ImageMeta, shape: tuple[int, ...], path: Path) -> ImageMeta:
    stored = tuple(int(s) for s in meta.shape)
    return ImageMeta(affine=meta.affine, shape=tuple(int(s) for s in shape), qform=meta.qform,
                     sform=meta.sform, qform_code=meta.qform_code, sform_code=meta.sform_code,
                     xyzt_units=meta.xyzt_units, source=str(path),
                     stored_shape=stored if stored != tuple(int(s) for s in shape) else None)


def _check_values(array: np.ndarray, path: Path) -> None:
    if array.size == 0:
        raise InputError(f"{path}: is empty (shape {array.shape}).")
    if min(array.shape) < 2:
        raise InputError(f"{path}: is a single slice or line (shape {array.shape}); a volume needs at least "
                         "2 voxels along every axis.")
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{path}: contains {int((~finite).sum())} NaN or infinite voxels; fix or mask them first.")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{path}: is constant (every voxel {float(array.min()):g}); it holds no image.")


def write_image(path: str | Path, array: np.ndarray, meta: ImageMeta, dtype: np.dtype | type = np.float32,
                stamp: str | None = None) -> Path:
    """Write ``array`` on the grid of ``meta`` as NIfTI, or MHA/NRRD by the name's suffix, atomically
    (temporary name, then rename). NIfTI keeps qform/sform and their codes; MHA/NRRD hold the affine
    in ITK's LPS terms (a sheared affine, which they cannot hold, is a :class:`UsageError`).
    ``stamp`` (what made the image, :func:`read_stamp` reads it back) goes into the NIfTI description
    (79 characters at most) or the MHA/NRRD header field ``medsynth_model``."""
    path = Path(path)
    array = np.asarray(array)
    if tuple(array.shape) != tuple(meta.shape):
        raise UsageError(f"{path}: array shape {array.shape} differs from the image grid {meta.shape}.")
    if meta.stored_shape is not None:  # an input stored as (H, W, 1) is written back as (H, W, 1), not (H, W)
        array = array.reshape(meta.stored_shape)
    if path.name.lower().endswith((".mha", ".nrrd")):
        return _write_itk(path, array.astype(dtype, copy=False), meta, stamp)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise UsageError(f"{path}: outputs are NIfTI (.nii.gz, .nii) or MHA/NRRD (.mha, .nrrd).")
    image = nib.Nifti1Image(array.astype(dtype, copy=False), None)
    _set_geometry(image.header, meta)
    image.header.set_data_dtype(dtype)
    if stamp:
        image.header["descrip"] = stamp.encode("ascii", "replace")[:79]
    _atomic_save(image, path)
    return path


STAMP_KEY = "medsynth_model"


def read_stamp(path: str | Path) -> str | None:
    """What :func:`write_image` stamped into a NIfTI/MHA/NRRD file (its description), None when unreadable."""
    path = Path(path)
    try:
        if path.name.endswith(NIFTI_SUFFIXES):
            return bytes(nib.load(str(path)).header["descrip"]).decode("ascii", "replace").rstrip("\x00") or None
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader.GetMetaData(STAMP_KEY) if reader.HasMetaDataKey(STAMP_KEY) else None
    except (OSError, RuntimeError, ValueError):
        return None


def _write_itk(path: Path, array: np.ndarray, meta: ImageMeta, stamp: str | None = None) -> Path:
    import SimpleITK as sitk

    linear = np.asarray(meta.affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise UsageError(f"{path}: the image grid has sheared voxel axes, which MHA/NRRD cannot hold; write NIfTI.")
    volume = array[..., None] if array.ndim == 2 else array  # a slice keeps its place in space as (X, Y, 1)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (RAS_LPS[:3, :3] @ direction).ravel()])
    image.SetOrigin([float(v) for v in RAS_LPS[:3, :3] @ np.asarray(meta.affine, dtype=np.float64)[:3, 3]])
    if stamp:
        image.SetMetaData(STAMP_KEY, stamp)
    with atomic_path(path, path.suffix) as partial:
        sitk.WriteImage(image, str(partial), True)
    return path


def _set_geometry(header: nib.Nifti1Header, meta: ImageMeta) -> None:
    qform = meta.qform if meta.qform is not None else meta.affine
    sform = meta.sform if meta.sform is not None else meta.affine
    header.set_qform(qform, code=meta.qform_code)
    header.set_sform(sform, code=meta.sform_code)
    header["xyzt_units"] = meta.xyzt_units


def _atomic_save(image: nib.Nifti1Image, path: Path) -> None:
    # nibabel picks the format by extension, so the temporary name keeps it.
    with atomic_path(path, ".nii.gz" if path.name.endswith(".nii.gz") else ".nii") as partial:
        nib.save(image, str(partial))


def write_ct(path: str | Path, hu: np.ndarray, meta: ImageMeta, stamp: str | None = None) -> Path:
    """Write Hounsfield units as int16, rounded and clipped to the CT range [-1024, 3071]."""
    clipped = np.clip(np.rint(hu), *CT_RANGE)
    return write_image(path, clipped, meta, np.int16, stamp)


def write_labels(path: str | Path, labels: np.ndarray, meta: ImageMeta) -> Path:
    """Write an integer label map as uint8."""
    return write_image(path, np.asarray(labels), meta, np.uint8)
