"""DICOM as a format of the registry: series folders (or one file) read by :mod:`medsynth.io.dicom`, a
synthetic CT written as a CT Image Storage series by :mod:`medsynth.io.dicom_write`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from medsynth.errors import UsageError
from medsynth.io.contract import ImageFormat, Origin
from medsynth.io.dicom import read_series
from medsynth.io.dicom_write import identity_for, read_series_stamp, write_ct_series
from medsynth.io.volume import ImageMeta, Volume


class Dicom(ImageFormat):
    """A series folder, or one ``.dcm`` file, in; a CT series folder ``<case>/`` out (int16 HU only), which
    joins the patient and study of a DICOM ``origin.source``; the stamp is its Derivation Description."""

    name, title = "dicom", "DICOM"
    ct_only = True

    def claims(self, path: Path) -> bool:
        return path.is_dir() or path.name.lower().endswith(".dcm")

    def read(self, path: Path, series: tuple[str, ...] = ()) -> Volume:
        array, affine, _ = read_series(path, series)
        return Volume(array, ImageMeta.from_affine(affine, array.shape, source=str(path)), path)

    def write(self, path: Path, values: np.ndarray, meta: ImageMeta, dtype: np.dtype | type,
              stamp: str | None = None, origin: Origin | None = None) -> Path:
        if np.dtype(dtype) != np.int16:
            raise UsageError(f"{path}: a DICOM series holds a CT in HU (int16), not {np.dtype(dtype)} values; "
                             "write float maps as NIfTI or MHA.")
        origin = origin or Origin()
        identity = identity_for(origin.source, origin.series, origin.description, origin.patient_id,
                                origin.patient_name, origin.patient_position, origin.series_number, origin.case)
        return write_ct_series(path, values, meta, replace(identity, comments=origin.comments))

    def read_stamp(self, path: Path) -> str | None:
        return read_series_stamp(path)
