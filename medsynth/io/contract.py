"""The one reader/writer contract: what a file format says it reads and writes, and the two calls it answers.

A format is an :class:`ImageFormat` subclass registered in :mod:`medsynth.io.formats`; ``read_image``,
``write_image`` and case discovery ask that registry, never a format by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the contract itself loads no numpy: the CLI lists the formats before anything heavy
    import numpy as np

    from medsynth.io.volume import ImageMeta, Volume


@dataclass(frozen=True)
class Origin:
    """What an output image was made from and whom it belongs to. Each format keeps what it can hold: a
    DICOM series all of it (patient, study, Frame of Reference of a DICOM ``source``), NIfTI and MHA none.

    ``source``: the input image (file or DICOM series folder); ``series``: the Series Instance UIDs that
    chose its series; ``description``: what the image is, in words; ``comments``: a QA line, empty when none.
    ``patient_position`` and ``series_number`` None: the source's, as the format reads it. ``patient_id`` and
    ``patient_name`` empty: the source's, else (a new study) ``case`` as the Patient ID and no name.
    """

    source: Path | None = None
    series: tuple[str, ...] = ()
    description: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_position: str | None = None
    series_number: int | None = None
    comments: str = ""
    case: str = ""


class ImageFormat:
    """A file format: the files it claims, read into a :class:`Volume`, written from values on a grid.

    Class attributes: ``name``, the output-format name (``--format``); ``title``, how messages name it
    (``"NIfTI"``); ``hint``, the suffixes messages offer (``".nii, .nii.gz"``; empty for a folder format);
    ``suffixes``, the lower-case file suffixes it reads, by which case discovery finds its files;
    ``written``, the suffixes it writes, the first of which names outputs (none: it writes folders, named
    by the case alone); ``ct_only``, it holds a patient's CT only (no float maps, no generated slices).
    """

    name: str = ""
    title: str = ""
    hint: str = ""
    suffixes: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    ct_only: bool = False

    def claims(self, path: Path) -> bool:
        """Whether ``path`` (existing or not) is a file this format reads, by its suffix."""
        return path.name.lower().endswith(self.suffixes) if self.suffixes else False

    def writes(self, path: Path) -> bool:
        """Whether an output named ``path`` is one this format writes, by its suffix."""
        return path.name.lower().endswith(self.written) if self.written else False

    def output_name(self, name: str) -> str:
        """The file (or folder) name of an output image called ``name``: ``name`` + the first written suffix."""
        return name + (self.written[0] if self.written else "")

    def read(self, path: Path, series: tuple[str, ...] = ()) -> Volume:
        """The image at ``path`` as float32 values in file voxel order with its RAS+ geometry (all its axes,
        trailing singletons included; ``read_image`` checks shape and values). ``series``: Series Instance
        UIDs for a format whose files hold several. Raises :class:`InputError` for what it cannot read."""
        raise NotImplementedError(f"{type(self).__name__} reads no images")

    def write(self, path: Path, values: np.ndarray, meta: ImageMeta, dtype: np.dtype | type,
              stamp: str | None = None, origin: Origin | None = None) -> Path:
        """Write ``values`` (already shaped as stored, on the grid of ``meta``) as ``dtype`` at ``path``,
        atomically; ``stamp`` says what made it (:meth:`read_stamp` gives it back). Returns ``path``.
        Raises :class:`UsageError` for a grid or type the format cannot hold."""
        raise NotImplementedError(f"{type(self).__name__} writes no images")

    def read_stamp(self, path: Path) -> str | None:
        """What :meth:`write` stamped into ``path``; None when there is none or it cannot be read."""
        return None
