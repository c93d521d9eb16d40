"""Multi-frame (enhanced) DICOM: frames placed by their own Plane Positions under the classic series' rules —
the same volume as the classic series, a missing frame resampled (never 1 mm for 2 mm), tilt and duplicate
positions refused in one line, in a folder or as one file, named by its case id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.errors import InputError
from medsynth.io import read_image, resolve_inputs

LPS = np.diag([-1.0, -1.0, 1.0])
AFFINE = np.array([[0.9, 0.0, 0.0, -20.0], [0.0, 1.1, 0.0, 12.0], [0.0, 0.0, 2.0, -30.0], [0.0, 0.0, 0.0, 1.0]])


def _volume() -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (20, 18, 12)], indexing="ij")
    head = sum(g**2 for g in grid) < 0.8
    return np.where(head, 600.0, 20.0) + 100.0 * grid[2] + 50.0 * grid[0] + 200.0


def write_enhanced(path: Path, values: np.ndarray, affine: np.ndarray, keep: list[int] | None = None,
                   shift: dict[int, tuple[float, float, float]] | None = None) -> Path:
    """An Enhanced MR Image with the z slices ``keep`` of ``values`` as frames (stored as uint16 with slope 0.5),
    each placed by its own Plane Position (``shift`` moves frame k's position by an LPS offset, mm)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    keep = list(range(values.shape[2])) if keep is None else keep
    axes = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientID, ds.NumberOfFrames = "P", len(keep)
    ds.Rows, ds.Columns = int(values.shape[1]), int(values.shape[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in (*(axes[:, 0] / spacing[0]), *(axes[:, 1] / spacing[1]))]
    measures.PixelSpacing, measures.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 0.5, 0.0, "US"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in keep:
        group, position = Dataset(), Dataset()
        place = LPS @ (affine @ [0.0, 0.0, k, 1.0])[:3] + np.asarray((shift or {}).get(k, (0.0, 0.0, 0.0)))
        position.ImagePositionPatient = [float(v) for v in place]
        group.PlanePositionSequence = Sequence([position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.rint(values[:, :, keep] / 0.5).astype(np.uint16)
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()  # frames, rows (y), columns (x)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_enhanced_image_reads_as_its_classic_series(tmp_path, write_dicom_series):
    values = _volume()
    enhanced = read_image(write_enhanced(tmp_path / "mf" / "image.dcm", values, AFFINE).parent)
    classic = read_image(write_dicom_series(tmp_path / "classic", values, AFFINE, slope=0.5, intercept=0.0))
    np.testing.assert_allclose(enhanced.meta.affine, classic.meta.affine, atol=1e-6)
    np.testing.assert_allclose(enhanced.meta.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.array, values, atol=0.25)


def test_a_missing_frame_is_resampled_on_the_true_spacing_never_squeezed(tmp_path):
    values = _volume()
    keep = [k for k in range(12) if k != 5]
    single = write_enhanced(tmp_path / "gap.dcm", values, AFFINE, keep=keep)
    for given in (single, single.parent):  # one file, or the folder holding it
        volume = read_image(given)
        assert volume.array.shape == values.shape  # 12 slices at 2 mm again, not 11 at 2.2 or 1 mm
        np.testing.assert_allclose(volume.meta.affine, AFFINE, atol=1e-6)
        np.testing.assert_allclose(volume.array[..., 4], values[..., 4], atol=0.25)
        np.testing.assert_allclose(volume.array[..., 5], (values[..., 4] + values[..., 6]) / 2, atol=0.25)


@pytest.mark.parametrize(("shift", "message"), [({6: (3.0, 0.0, 0.0)}, "off the slice normal"),
                                                ({6: (0.0, 0.0, -2.0)}, "same position")])
def test_tilted_or_doubled_frames_are_refused_in_one_line(tmp_path, shift, message):
    path = write_enhanced(tmp_path / "mf" / "bad.dcm", _volume(), AFFINE, shift=shift)
    for given in (path, path.parent):
        with pytest.raises(InputError, match=message):
            read_image(given)


def test_a_single_dicom_files_case_is_its_name_without_the_suffix(tmp_path):
    path = write_enhanced(tmp_path / "case_7.dcm", _volume(), AFFINE)
    assert resolve_inputs(path) == {"case_7": path}
