"""NIfTI-1/2 files (nibabel): qform and sform with their codes kept exactly from read to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import InputError
from medsynth.io.contract import ImageFormat, Origin
from medsynth.io.outputs import atomic_path
from medsynth.io.volume import ImageMeta, Volume, describe_pixels

_INTENT_VECTOR = 1007
_DESCRIPTION_BYTES = 79  # the header's descrip field, its last byte the terminating NUL


class Nifti(ImageFormat):
    """``.nii.gz`` and ``.nii``; the stamp is the header's description (79 characters at most)."""

    name, title, hint = "nifti", "NIfTI", ".nii, .nii.gz"
    suffixes = written = (".nii.gz", ".nii")

    def read(self, path: Path, series: tuple[str, ...] = ()) -> Volume:
        import nibabel as nib  # loaded with the first NIfTI, so that listing the formats stays light

        image = nib.load(str(path))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: not a NIfTI image.")
        header = image.header
        dtype = header.get_data_dtype()
        components = image.shape[4:] if len(image.shape) > 4 else ()
        if dtype.names or dtype.kind == "c" or int(header["intent_code"]) == _INTENT_VECTOR \
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
        return Volume(array, meta, path)

    def write(self, path: Path, values: np.ndarray, meta: ImageMeta, dtype: np.dtype | type,
              stamp: str | None = None, origin: Origin | None = None) -> Path:
        import nibabel as nib

        image = nib.Nifti1Image(values.astype(dtype, copy=False), None)
        header = image.header
        header.set_qform(meta.qform if meta.qform is not None else meta.affine, code=meta.qform_code)
        header.set_sform(meta.sform if meta.sform is not None else meta.affine, code=meta.sform_code)
        header["xyzt_units"] = meta.xyzt_units
        header.set_data_dtype(dtype)
        if stamp:
            header["descrip"] = stamp.encode("ascii", "replace")[:_DESCRIPTION_BYTES]
        # nibabel picks the format by extension, so the temporary name keeps it.
        with atomic_path(path, ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii") as partial:
            nib.save(image, str(partial))
        return path

    def read_stamp(self, path: Path) -> str | None:
        import nibabel as nib

        try:
            return bytes(nib.load(str(path)).header["descrip"]).decode("ascii", "replace").rstrip("\x00") or None
        except (OSError, RuntimeError, ValueError):
            return None
