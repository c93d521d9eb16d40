"""DICOM series read from their own slice positions (pydicom), never stacked as if regular.

A folder may hold several series; each is listed by Series Instance UID, description and slice count,
and one is chosen by UID. Within a series the slices must share orientation, size and pixel spacing
and lie on one line along the slice normal. Their positions along the normal then decide:

- evenly spaced (within :data:`REGULAR_TOLERANCE_MM`): the volume is the stack, spacing from the
  positions themselves (not Slice Thickness);
- gaps or uneven spacing: resampled linearly onto a regular grid at the smallest spacing found, from
  the first to the last slice, as dcm2niix does, with a one-line note on the ``medsynth`` logger;
- two images at one position, or positions off the normal (gantry tilt): refused in one line naming
  the files, since no single volume describes them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.errors import InputError
from medsynth.io.dicom_frames import frame_count, frame_headers, frame_pixels
from medsynth.io.volume import describe_pixels
from medsynth.io.world import RAS_LPS

REGULAR_TOLERANCE_MM = 0.05  # largest distance of a slice from the evenly spaced line it should lie on
DUPLICATE_TOLERANCE_MM = 0.01  # slices closer than this along the normal share one position
OFF_NORMAL_TOLERANCE_MM = 0.05  # largest in-plane drift of the slice origins (gantry tilt beyond it)

_PREAMBLE = 128  # bytes before the ``DICM`` marker of a Part-10 file

log = logging.getLogger("medsynth")


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part-10 file (``DICM`` after the 128-byte preamble) or a ``.dcm`` file."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(_PREAMBLE)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """A folder whose visible files include DICOM files is one series (case)."""
    return path.is_dir() and any(f.is_file() and is_dicom_file(f) for f in _visible(path))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a folder: its UID, description, files and the headers read from them (no pixels)."""

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]
    headers: tuple  # pydicom Datasets, read with stop_before_pixels

    def summary(self) -> str:
        """``UID ('description', N slices)``: how a series is named to the user."""
        return f"{self.uid} ({self.description!r}, {self.modality or '?'}, {len(self.files)} slices)"


def list_series(folder: Path) -> dict[str, SeriesInfo]:
    """Every series among the visible DICOM files directly in ``folder``, by Series Instance UID."""
    import pydicom

    groups: dict[str, list[tuple[Path, object]]] = {}
    for file in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as error:
            raise InputError(f"{file}: is not a readable DICOM file ({_first_line(error)}); remove it from the "
                             "series folder.") from error
        if not _looks_like_image(header):
            continue  # a DICOMDIR, structured report or RT object beside the images is not part of the volume
        uid = str(header.get("SeriesInstanceUID", "") or "no-series-uid")
        groups.setdefault(uid, []).append((file, header))
    return {uid: SeriesInfo(uid, str(items[0][1].get("SeriesDescription", "") or ""),
                            str(items[0][1].get("Modality", "") or ""), tuple(f for f, _ in items),
                            tuple(h for _, h in items)) for uid, items in groups.items()}


def _looks_like_image(header) -> bool:
    return "Rows" in header and "Columns" in header


def choose_series(folder: Path, series: Sequence[str] = ()) -> SeriesInfo:
    """The series of ``folder`` to read: the only one, or the one whose UID is in ``series``.

    Raises :class:`InputError` listing every series (UID, description, slices) when the choice is
    not clear.
    """
    found = list_series(folder)
    if not found:
        raise InputError(f"{folder}: holds no DICOM image series; point to a DICOM series folder or an image file.")
    chosen = [found[uid] for uid in series if uid in found]
    if len(chosen) == 1:
        return chosen[0]
    listing = "; ".join(info.summary() for info in found.values())
    if len(chosen) > 1:
        raise InputError(f"{folder}: --series names {len(chosen)} series of this folder ({listing}); name one.")
    if len(found) == 1:
        if series:
            raise InputError(f"{folder}: holds no series {', '.join(series)}; it holds {listing}.")
        return next(iter(found.values()))
    raise InputError(f"{folder}: holds {len(found)} DICOM series: {listing}; choose one with --series UID.")


@dataclass(frozen=True)
class SeriesGeometry:
    """A series' slice layout in LPS mm: in-plane axes and spacings, the normal and each slice's offset."""

    row_cosine: np.ndarray  # direction of increasing column index (array axis x)
    column_cosine: np.ndarray  # direction of increasing row index (array axis y)
    spacing_xy: tuple[float, float]  # (along the row cosine, along the column cosine)
    normal: np.ndarray
    origin: np.ndarray  # position of the first slice (smallest offset along the normal)
    offsets: np.ndarray  # each slice's distance along the normal from the first, ascending
    order: np.ndarray  # file index of each sorted slice


def read_series(folder: Path, series: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, str]:
    """The chosen series of ``folder`` (or the one DICOM file ``folder``: a slice, or a multi-frame image's
    frames) as float32 values (x, y, z) with modality LUT applied, and its
    voxel -> RAS+ mm affine, plus the series UID.

    Raises :class:`InputError` in one line for several series without a choice, mixed slice sizes or
    orientations, two images at one position and slices off the normal; uneven or missing slices are
    resampled (logged as a note).
    """
    info = _as_frames(choose_series(folder, series) if Path(folder).is_dir() else file_series(Path(folder)))
    geometry = slice_geometry(info)
    if len(set(info.files)) == 1 and len(info.files) > 1:  # the frames of one multi-frame image
        stack = np.moveaxis(frame_pixels(info.files[0], list(info.headers))[geometry.order], 0, -1)
    else:
        stack = np.stack([_pixels(info.files[i]) for i in geometry.order], axis=-1)
    spacing_z, regular = _regular_spacing(geometry, stack.shape[2], info)
    if not regular:
        stack, spacing_z = _resample_uneven(stack, geometry.offsets, spacing_z)
        gaps = np.diff(geometry.offsets)
        log.warning("note: %s: slices unevenly spaced along the normal (gaps %.4g to %.4g mm); resampled onto a "
                    "regular %.4g mm grid of %d slices", folder, gaps.min(), gaps.max(), spacing_z, stack.shape[2])
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_cosine * geometry.spacing_xy[0]
    lps[:3, 1] = geometry.column_cosine * geometry.spacing_xy[1]
    lps[:3, 2] = geometry.normal * spacing_z
    lps[:3, 3] = geometry.origin
    return stack.astype(np.float32), RAS_LPS @ lps, info.uid


def file_series(file: Path) -> SeriesInfo:
    """One DICOM file given alone: a single slice, or the frames of a multi-frame image."""
    import pydicom

    try:
        header = pydicom.dcmread(file, stop_before_pixels=True)
    except Exception as error:
        raise InputError(f"{file}: is not a readable DICOM file ({_first_line(error)}).") from error
    if not _looks_like_image(header):
        raise InputError(f"{file}: is a DICOM file without an image (no Rows/Columns).")
    return SeriesInfo(str(header.get("SeriesInstanceUID", "") or "no-series-uid"),
                      str(header.get("SeriesDescription", "") or ""), str(header.get("Modality", "") or ""),
                      (file,), (header,))


def _as_frames(info: SeriesInfo) -> SeriesInfo:
    """A series holding one multi-frame image becomes the series of its frames (one header each, every file
    entry that image), so the classic geometry rules apply to them; a multi-frame image beside other images
    in one series is refused."""
    multi = [file for file, header in zip(info.files, info.headers, strict=True) if frame_count(header) > 1]
    if not multi:
        return info
    if len(info.files) > 1:
        raise InputError(f"{multi[0]}: is a multi-frame (enhanced) image in series {info.uid} beside "
                         f"{len(info.files) - 1} other file(s); a series is one multi-frame image or single-frame "
                         "slices, not both.")
    frames = frame_headers(info.files[0], info.headers[0])
    return SeriesInfo(info.uid, info.description, info.modality, (info.files[0],) * len(frames), tuple(frames))


def slice_geometry(info: SeriesInfo) -> SeriesGeometry:
    """Check that the slices share size, orientation and spacing and lie along their normal; sort them."""
    headers, files = info.headers, info.files
    first = headers[0]
    for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        for file, header in zip(files, headers, strict=True):
            if name not in header:
                raise InputError(f"{file}: has no {name}; the slice cannot be placed in space.")
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    size = (int(first.Rows), int(first.Columns))
    pixel = np.asarray(first.PixelSpacing, dtype=np.float64)
    for file, header in zip(files[1:], headers[1:], strict=True):
        if not np.allclose(np.asarray(header.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4):
            raise InputError(f"{file}: its Image Orientation differs from {files[0].name} in series {info.uid}; a "
                             "series must be one stack of parallel slices (choose one orientation).")
        if (int(header.Rows), int(header.Columns)) != size or not np.allclose(
                np.asarray(header.PixelSpacing, dtype=np.float64), pixel, atol=1e-4):
            raise InputError(f"{file}: its size or pixel spacing differs from {files[0].name} in series {info.uid}; "
                             "a series must share one slice grid.")
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    positions = np.asarray([np.asarray(h.ImagePositionPatient, dtype=np.float64) for h in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    in_plane = positions - np.outer(along, normal)
    drift = np.linalg.norm(in_plane - in_plane[0], axis=1)
    if drift.max() > OFF_NORMAL_TOLERANCE_MM:
        worst = files[order[int(drift.argmax())]]
        raise InputError(f"{worst}: lies {drift.max():.3g} mm off the slice normal of series {info.uid} (gantry "
                         "tilt or sheared stack); correct the tilt (e.g. dcm2niix) before using it.")
    same = np.flatnonzero(np.diff(along) < DUPLICATE_TOLERANCE_MM)
    if same.size:
        a, b = files[order[same[0]]], files[order[same[0] + 1]]
        raise InputError(f"{b}: lies at the same position as {a.name} in series {info.uid} ({same.size} such "
                         "pairs); the series holds several images per position (echoes, phases or repeats): "
                         "export them as separate series.")
    return SeriesGeometry(row, column, (float(pixel[1]), float(pixel[0])), normal, positions[0],
                          along - along[0], order)


def _regular_spacing(geometry: SeriesGeometry, count: int, info: SeriesInfo) -> tuple[float, bool]:
    """The slice spacing and whether the slices lie evenly along the normal (within the tolerance)."""
    if count == 1:
        header = info.headers[0]
        thickness = float(header.get("SpacingBetweenSlices", 0) or header.get("SliceThickness", 0) or 1.0)
        return abs(thickness) or 1.0, True
    offsets = geometry.offsets
    spacing = float(offsets[-1] / (count - 1))
    even = np.abs(offsets - spacing * np.arange(count)).max() <= REGULAR_TOLERANCE_MM
    return (spacing, True) if even else (float(np.diff(offsets).min()), False)


def _resample_uneven(stack: np.ndarray, offsets: np.ndarray, finest: float) -> tuple[np.ndarray, float]:
    """Linear interpolation along the normal onto a regular grid from the first to the last slice, its
    spacing the finest gap (adjusted so the last slice lands on the grid)."""
    count = round(float(offsets[-1]) / finest) + 1
    spacing = float(offsets[-1] / (count - 1))
    targets = spacing * np.arange(count)
    upper = np.clip(np.searchsorted(offsets, targets, side="right"), 1, len(offsets) - 1)
    lower = upper - 1
    weight = np.clip((targets - offsets[lower]) / (offsets[upper] - offsets[lower]), 0.0, 1.0)
    resampled = stack[..., lower] * (1.0 - weight) + stack[..., upper] * weight
    return resampled.astype(np.float32), spacing


def _pixels(file: Path) -> np.ndarray:
    """One slice's modality values (HU for CT) as (x, y): pydicom, or GDCM via SimpleITK for encodings
    pydicom cannot decode here."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    dataset = pydicom.dcmread(file)
    try:
        values = apply_modality_lut(dataset.pixel_array, dataset)
    except Exception:
        values = _pixels_by_gdcm(file)
    values = np.asarray(values)
    if values.ndim != 2:
        colour = str(dataset.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR", "PALETTE"))
        raise InputError(f"{file}: holds {describe_pixels(values.shape[2:], values.dtype, colour)}; a "
                         "single-channel greyscale slice is needed (one frame, MONOCHROME).")
    return values.T.astype(np.float32)


def _pixels_by_gdcm(file: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(file))
    except RuntimeError as error:
        raise InputError(f"{file}: its pixel data cannot be decoded ({_first_line(error)}).") from error
    array = sitk.GetArrayFromImage(image)
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


def _first_line(error: BaseException) -> str:
    # pydicom's advice to programmers ("Use force=True to force reading") means nothing on a command line.
    text = re.sub(r"\s*Use force=True[^.]*\.?", "", str(error)).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]
