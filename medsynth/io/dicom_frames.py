"""Multi-frame (enhanced) DICOM images as series of frames, so that they meet the same geometry rules as a
classic one-file-per-slice series (:mod:`medsynth.io.dicom`): gaps resampled, tilt and duplicates refused.

An enhanced image keeps each frame's place in its Per-frame Functional Groups (Plane Position), and what all
frames share in the Shared Functional Groups (Plane Orientation, Pixel Measures, Pixel Value Transformation);
either group may hold any of them. Each frame becomes a header of its own, as a classic slice would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import InputError

# (functional group, attribute in it, attribute of a classic slice header)
_GROUPS = (("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
           ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
           ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
           ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
           ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
           ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"))


def frame_count(header) -> int:
    """Frames in a DICOM image (1 for a classic single-frame image)."""
    return int(header.get("NumberOfFrames", 1) or 1)


def frame_headers(file: Path, header) -> list:
    """One classic-looking header per frame (position, orientation, pixel spacing, rescale, size), taken from
    the per-frame groups first, then the shared ones, then the top level; :class:`InputError` naming the
    frame when one cannot be placed in space."""
    from pydicom.dataset import Dataset

    per_frame = list(header.get("PerFrameFunctionalGroupsSequence", []))
    shared = (header.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    count = frame_count(header)
    if len(per_frame) not in (0, count):
        raise InputError(f"{file}: a multi-frame image with {count} frames but {len(per_frame)} per-frame "
                         "functional groups; the file is damaged.")
    frames = []
    for index in range(count):
        frame = Dataset()
        frame.Rows, frame.Columns = header.Rows, header.Columns
        for group, name, target in _GROUPS:
            value = _lookup(per_frame[index] if per_frame else None, group, name)
            value = value if value is not None else _lookup(shared, group, name)
            value = value if value is not None else header.get(name)
            if value is not None:
                setattr(frame, target, value)
        if "ImagePositionPatient" not in frame:
            raise InputError(f"{file}: frame {index + 1} of this multi-frame image has no Plane Position; it cannot "
                             "be placed in space.")
        frames.append(frame)
    return frames


def _lookup(groups, group: str, name: str):
    if groups is None or group not in groups or not groups[group].value:
        return None
    return groups[group][0].get(name)


def frame_pixels(file: Path, frames: list) -> np.ndarray:
    """The frames' modality values, (frames, x, y) float32: stored values × slope + intercept per frame."""
    import pydicom

    dataset = pydicom.dcmread(file)
    stored = np.asarray(dataset.pixel_array)
    if stored.ndim != 3 or stored.shape[0] != len(frames):
        raise InputError(f"{file}: its pixel data holds {stored.shape} values, not {len(frames)} greyscale frames; a "
                         "single-channel multi-frame image is needed.")
    slopes = np.asarray([float(f.get("RescaleSlope", 1.0) or 1.0) for f in frames], dtype=np.float64)
    intercepts = np.asarray([float(f.get("RescaleIntercept", 0.0) or 0.0) for f in frames], dtype=np.float64)
    values = stored * slopes[:, None, None] + intercepts[:, None, None]
    return np.ascontiguousarray(values.transpose(0, 2, 1)).astype(np.float32)  # (rows, columns) = (y, x)
