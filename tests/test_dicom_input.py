"""DICOM series read from their own slice positions: every slice lands within 0.5 mm of its DICOM position,
or the series is refused in one line (exit 2; exit 1 in a batch, the other cases written). Inputs are made
here with pydicom: 48 slices of 48×48, 2 mm apart, then broken the ways real exports break."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import InputError
from medsynth.io import read_image
from medsynth.training import train

SIZE, SLICES, GAP = 48, 48, 2.0
LPS = np.diag([-1.0, -1.0, 1.0])
ORIGIN = np.array([-60.0, -80.0, -40.0])  # LPS mm of the first voxel of the first slice


def _pattern(k: int) -> np.ndarray:
    """Slice ``k`` as (rows, columns): a head-like disc whose brightness names the slice."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = ((yy - 24) ** 2 + (xx - 22) ** 2) < 18**2
    return (disc * (200 + 10 * k) + xx).astype(np.uint16)


def write_mr_series(folder: Path, offsets: Sequence[float], series_uid: str | None = None,
                    description: str = "T1", first_index: int = 0, shift: Sequence[Sequence[float]] | None = None,
                    study: tuple[str, str] | None = None) -> list[Path]:
    """One MR file per offset (mm along the normal), axial, 1 mm pixels; ``shift`` moves slice origins in-plane."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = study or (generate_uid(), generate_uid())
    files = []
    for index, offset in enumerate(offsets):
        k = first_index + index
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        instance = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, instance
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, instance, "MR"
        ds.PatientID, ds.PatientName, ds.PatientPosition = "DICOM-P1", "Test^Dicom", "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 3, k + 1
        position = ORIGIN + [0.0, 0.0, offset] + (np.asarray(shift[index]) if shift is not None else 0.0)
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], GAP
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = _pattern(k).tobytes()
        path = folder / f"{description}_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def regular(count: int = SLICES) -> list[float]:
    return [GAP * k for k in range(count)]


def assert_slices_in_place(array: np.ndarray, affine: np.ndarray, files: Sequence[Path]) -> None:
    """Every DICOM slice's centre lies within 0.5 mm of a slice of the volume holding its very pixels."""
    inverse = np.linalg.inv(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for file in files:
        ds = pydicom.dcmread(file)
        centre_ijk = np.array([(SIZE - 1) / 2, (SIZE - 1) / 2, 0.0])
        # The slice centre in the world, from the file's own position and axes (rows along y, columns along x).
        centre = LPS @ (np.asarray(ds.ImagePositionPatient, float) + centre_ijk[0] * np.array([1.0, 0, 0])
                        + centre_ijk[1] * np.array([0, 1.0, 0]))
        ijk = (inverse @ [*centre, 1.0])[:3]
        k = round(float(ijk[2]))
        assert np.all(np.abs((ijk - [*centre_ijk[:2], k]) * spacing) <= 0.5), (file.name, ijk)
        np.testing.assert_allclose(array[:, :, k], ds.pixel_array.T, atol=1e-3, err_msg=file.name)


def test_a_regular_series_is_read_at_its_positions(tmp_path):
    files = write_mr_series(tmp_path / "s", regular())
    volume = read_image(tmp_path / "s")
    assert volume.array.shape == (SIZE, SIZE, SLICES)
    np.testing.assert_allclose(volume.meta.spacing, (1.0, 1.0, GAP), atol=1e-6)
    assert_slices_in_place(volume.array, volume.meta.affine, files)


@pytest.mark.parametrize("offsets", [
    [o for k, o in enumerate(regular()) if k != 30],  # one file of an evenly spaced series deleted
    [GAP * k for k in range(24)] + [GAP * 23 + 4.0 * k for k in range(1, 25)],  # 2 mm then 4 mm apart
], ids=["one_file_deleted", "2mm_then_4mm"])
def test_gaps_and_uneven_spacing_are_resampled_with_every_slice_in_place(tmp_path, offsets, caplog):
    files = write_mr_series(tmp_path / "s", offsets)
    volume = read_image(tmp_path / "s")
    np.testing.assert_allclose(volume.meta.spacing, (1.0, 1.0, GAP), atol=1e-6)  # the finest gap
    assert volume.array.shape[2] == round(offsets[-1] / GAP) + 1
    assert_slices_in_place(volume.array, volume.meta.affine, files)


def test_a_resampled_series_is_said_in_one_line_through_the_cli(tmp_path, model):
    write_mr_series(tmp_path / "in" / "gap", [o for k, o in enumerate(regular()) if k != 30])
    result = _run(model, tmp_path / "in" / "gap", tmp_path / "out")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "resampled onto a regular 2 mm grid of 48 slices" in notes[0]
    written = nib.load(tmp_path / "out" / "gap.nii.gz")
    np.testing.assert_allclose(written.affine, read_image(tmp_path / "in" / "gap").meta.affine, atol=1e-5)


def _one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_two_series_in_a_folder_are_listed_and_one_is_chosen_by_uid(tmp_path, model, capfd):
    folder = tmp_path / "two"
    write_mr_series(folder, regular(), "1.2.3.1", "T1 MPRAGE")
    t2 = write_mr_series(folder, regular(40), "1.2.3.2", "T2 TSE")

    line = _one_error_line(_run(model, folder, tmp_path / "out"))
    assert "1.2.3.1 ('T1 MPRAGE', MR, 48 slices)" in line and "1.2.3.2 ('T2 TSE', MR, 40 slices)" in line
    assert "--series" in line and not (tmp_path / "out" / "two.nii.gz").exists()

    result = _run(model, folder, tmp_path / "out", "--series", "1.2.3.2")
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "out" / "two.nii.gz")
    assert written.shape == (SIZE, SIZE, 40)
    volume = read_image(folder, series=["1.2.3.2"])
    assert_slices_in_place(volume.array, written.affine, t2)
    assert "WARNING" not in capfd.readouterr().err  # no raw ITK message on the real stderr


def test_two_images_per_position_under_one_series_uid_are_refused_naming_the_file(tmp_path, model):
    folder = tmp_path / "mixed"
    write_mr_series(folder, regular(), "1.2.3.9", "echo1")
    write_mr_series(folder, regular(), "1.2.3.9", "echo2")
    line = _one_error_line(_run(model, folder, tmp_path / "out"))
    assert "same position" in line and ".dcm" in line and "1.2.3.9" in line
    assert not (tmp_path / "out" / "mixed.nii.gz").exists()


def test_slices_off_the_normal_are_refused_naming_the_file(tmp_path):
    shift = [(0.5 * k, 0.0, 0.0) for k in range(SLICES)]  # a 14-degree gantry tilt
    write_mr_series(tmp_path / "tilt", regular(), shift=shift)
    with pytest.raises(InputError, match=r"T1_047\.dcm: lies 23\.5 mm off the slice normal"):
        read_image(tmp_path / "tilt")


def test_in_a_batch_a_broken_series_fails_alone(tmp_path, model):
    write_mr_series(tmp_path / "in" / "good", regular())
    write_mr_series(tmp_path / "in" / "bad", regular(), "1.2.3.9", "a")
    write_mr_series(tmp_path / "in" / "bad", regular(), "1.2.3.9", "b")
    result = _run(model, tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert (tmp_path / "out" / "good.nii.gz").is_file() and not (tmp_path / "out" / "bad.nii.gz").exists()


@pytest.fixture(scope="module")
def model(tmp_path_factory, paired_phantom) -> Path:
    root = tmp_path_factory.mktemp("pix2pix")
    data = paired_phantom(root / "data", cases=2, shape=(24, 28, 24), spacing=6.0)
    train("pix2pix", data, root / "run", {"steps": 1, "batch_size": 1, "val_every": 0, "ckpt_every": 100,
                                          "preview_every": 100, "device": "cpu"},
          {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2})
    return root / "run"


def _run(*args: object):
    return CliRunner().invoke(app, ["translate", *(str(a) for a in args), "--device", "cpu"])
