"""Images whose voxels are not one grey value — RGB, vectors, complex numbers — are refused in one line that
says what the file holds and what is needed."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medsynth.cli import app


def _rgb_nifti(path: Path) -> Path:
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    return path


def _complex_nifti(path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.complex64), np.eye(4)), path)
    return path


def _vector_nifti(path: Path) -> Path:
    image = nib.Nifti1Image(np.ones((8, 8, 4, 1, 3), np.float32), np.eye(4))
    image.header.set_intent("vector")
    nib.save(image, path)
    return path


def _vector_mha(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 8, 8, 3), np.float32), isVector=True), str(path))
    return path


def _rgb_mha(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 8, 8, 3), np.uint8), isVector=True), str(path))
    return path


def _rgb_dicom(folder: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    folder.mkdir()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "OT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [1.0, 1.0], 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ones((8, 8, 3), np.uint8).tobytes()
    ds.save_as(folder / "rgb.dcm", enforce_file_format=True)
    return folder


@pytest.mark.parametrize(("name", "make", "holds"), [
    ("screenshot", _rgb_dicom, "RGB colour pixels (3 channels per voxel)"),
    ("rgb.nii.gz", _rgb_nifti, "RGB colour pixels (3 channels per voxel)"),
    ("complex.nii.gz", _complex_nifti, "complex values"),
    ("vector.nii.gz", _vector_nifti, "vectors of 3 components per voxel"),
    ("vector.mha", _vector_mha, "vectors of 3 components per voxel"),
    ("rgb.mha", _rgb_mha, "RGB colour pixels (3 channels per voxel)"),
])
def test_a_non_scalar_image_is_one_line_saying_what_it_holds(tmp_path, name, make, holds):
    path = make(tmp_path / name)
    result = CliRunner().invoke(app, ["evaluate", str(path), str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{name}: holds {holds}" in lines[0] or f"{name}/rgb.dcm: holds {holds}" in lines[0], lines[0]
    assert "single-channel greyscale" in lines[0], lines[0]
