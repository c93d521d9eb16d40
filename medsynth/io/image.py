"""Reading and writing images through the format registry: geometry goes in at read and comes back, unchanged,
at write, whatever the format (:mod:`medsynth.io.formats`; arrays and geometry: :mod:`medsynth.io.volume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsynth.errors import InputError, UsageError
from medsynth.io.contract import Origin
from medsynth.io.formats import format_for, output_format, suffix_hint, writer_for
from medsynth.io.volume import CT_RANGE, ImageMeta, Volume


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
    fmt = format_for(path)
    if fmt is None:
        raise InputError(f"{path}: not a supported image (use {suffix_hint()} or a DICOM folder).")
    volume = fmt.read(path, series)
    return volume.array, volume.meta


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
                stamp: str | None = None, fmt: str | None = None, origin: Origin | None = None) -> Path:
    """Write ``array`` on the grid of ``meta`` atomically (temporary name, then rename) in output format
    ``fmt`` (``--format``'s names), else in the format the name's suffix says: NIfTI (``.nii.gz``, ``.nii``),
    MHA/NRRD (``.mha``, ``.nrrd``), or any registered format. NIfTI keeps qform/sform and their codes;
    MHA/NRRD hold the affine in ITK's LPS terms (a sheared affine, which they cannot hold, is a
    :class:`UsageError`); DICOM writes an int16 CT series joining ``origin``'s patient and study.
    ``stamp`` (what made the image, :func:`read_stamp` reads it back) goes into the NIfTI description
    (79 characters at most), the MHA/NRRD header field ``medsynth_model`` or the DICOM Derivation Description.
    Raises :class:`UsageError` when ``array`` is not on the grid or no format writes ``path``."""
    path = Path(path)
    array = np.asarray(array)
    if tuple(array.shape) != tuple(meta.shape):
        raise UsageError(f"{path}: array shape {array.shape} differs from the image grid {meta.shape}.")
    if meta.stored_shape is not None:  # an input stored as (H, W, 1) is written back as (H, W, 1), not (H, W)
        array = array.reshape(meta.stored_shape)
    writer = writer_for(path) if fmt is None else output_format(fmt)
    return writer.write(path, array, meta, dtype, stamp, origin)


def read_stamp(path: str | Path) -> str | None:
    """What :func:`write_image` stamped into an image file or DICOM series folder, None when there is none or
    it cannot be read."""
    fmt = format_for(Path(path))
    return None if fmt is None else fmt.read_stamp(Path(path))


def write_ct(path: str | Path, hu: np.ndarray, meta: ImageMeta, stamp: str | None = None, fmt: str | None = None,
             origin: Origin | None = None) -> Path:
    """Write Hounsfield units as int16, rounded and clipped to the CT range [-1024, 3071], as
    :func:`write_image` does (``fmt``, ``origin``: see there)."""
    clipped = np.clip(np.rint(hu), *CT_RANGE)
    return write_image(path, clipped, meta, np.int16, stamp, fmt, origin)


def write_labels(path: str | Path, labels: np.ndarray, meta: ImageMeta) -> Path:
    """Write an integer label map as uint8."""
    return write_image(path, np.asarray(labels), meta, np.uint8)
