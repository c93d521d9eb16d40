"""``translate --format dicom``: a CT Image Storage series a planning system imports — valid by dciodvfy,
joined to the MR's patient, study and Frame of Reference, and the same HU and geometry as the NIfTI output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_dicom_input import regular, write_mr_series
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def model(tmp_path_factory, paired_phantom) -> Path:
    root = tmp_path_factory.mktemp("pix2pix")
    data = paired_phantom(root / "data", cases=2, shape=(24, 28, 24), spacing=6.0)
    train("pix2pix", data, root / "run", {"steps": 1, "batch_size": 1, "val_every": 0, "ckpt_every": 100,
                                          "preview_every": 100, "device": "cpu"},
          {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2})
    return root / "run"


def _translate(model: Path, source: Path, out: Path, *options: str) -> None:
    result = CliRunner().invoke(app, ["translate", str(model), str(source), str(out), "--device", "cpu", *options])
    assert result.exit_code == 0, (result.output, result.exception)


def _series(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(f) for f in folder.iterdir()), key=lambda ds: int(ds.InstanceNumber))


def _assert_valid(folder: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; CI installs it")
    for file in sorted(folder.iterdir()):
        check = subprocess.run(["dciodvfy", str(file)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (file.name, errors)


def _assert_same_as_nifti(folder: Path, nifti: Path) -> None:
    """pydicom and SimpleITK both read back the NIfTI output's HU (±1) on its grid (within 0.01 mm)."""
    import SimpleITK as sitk

    reference = nib.load(nifti)
    hu, affine = np.asarray(reference.dataobj), reference.affine
    slices = _series(folder)
    assert len(slices) == hu.shape[2]
    for k, ds in enumerate(slices):
        assert ds.Modality == "CT" and list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
        values = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(values, hu[:, :, k], atol=1.0)
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), LPS @ (affine @ [0, 0, k, 1])[:3],
                                   atol=0.01)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        np.testing.assert_allclose(iop[:3] * float(ds.PixelSpacing[1]), LPS @ affine[:3, 0], atol=0.01)
        np.testing.assert_allclose(iop[3:] * float(ds.PixelSpacing[0]), LPS @ affine[:3, 1], atol=0.01)
        assert abs(float(ds.SliceThickness) - spacing[2]) < 0.01
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    np.testing.assert_allclose(sitk.GetArrayFromImage(image).transpose(2, 1, 0), hu, atol=1.0)
    np.testing.assert_allclose(image.GetOrigin(), LPS @ affine[:3, 3], atol=0.01)
    np.testing.assert_allclose(np.asarray(image.GetDirection()).reshape(3, 3) * image.GetSpacing(),
                               LPS @ affine[:3, :3], atol=0.01)


def test_from_nifti_a_new_study_with_the_given_patient(tmp_path, model, oblique_affine, write_volume):
    affine = oblique_affine((5.0, 6.0, 7.0), angles=(8.0, -5.0, 10.0), origin=(-40.0, 30.0, -20.0), lps=True)
    write_volume(tmp_path / "in" / "p7.nii.gz", make_head(3, (14, 16, 12), 6.0).mr, affine)
    _translate(model, tmp_path / "in", tmp_path / "dicom", "--format", "dicom", "--patient-id", "ID-7",
               "--patient-name", "Doe^Jane", "--patient-position", "FFS", "--series-number", "42")
    _translate(model, tmp_path / "in", tmp_path / "nifti")

    series = tmp_path / "dicom" / "p7"
    _assert_valid(series)
    _assert_same_as_nifti(series, tmp_path / "nifti" / "p7.nii.gz")
    slices = _series(series)
    assert {ds.PatientID for ds in slices} == {"ID-7"} and str(slices[0].PatientName) == "Doe^Jane"
    assert {ds.PatientPosition for ds in slices} == {"FFS"} and {ds.SeriesNumber for ds in slices} == {42}
    assert "SYNTHETIC" in slices[0].SeriesDescription.upper() and "pix2pix" in slices[0].SeriesDescription
    assert "run" in slices[0].SeriesDescription  # the model (its run folder) is named
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    assert len({(ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID) for ds in slices}) == 1
    assert all("SourceImageSequence" not in ds and "ReferencedSeriesSequence" not in ds for ds in slices)
    assert {ds.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0].CodeMeaning for ds in slices
            } == {"Synthesizing Equipment"}  # no MR to refer to, still marked as synthesised


def test_from_a_dicom_mr_the_sct_joins_its_patient_study_and_frame_of_reference(tmp_path, model):
    files = write_mr_series(tmp_path / "in" / "mr_series", regular(24), "1.2.826.0.1.3680043.8.498.1")
    mr = pydicom.dcmread(files[0])
    _translate(model, tmp_path / "in" / "mr_series", tmp_path / "dicom", "--format", "dicom")
    _translate(model, tmp_path / "in" / "mr_series", tmp_path / "nifti")

    series = tmp_path / "dicom" / "mr_series"
    _assert_valid(series)
    _assert_same_as_nifti(series, tmp_path / "nifti" / "mr_series.nii.gz")
    mr_by_uid = {d.SOPInstanceUID: d for d in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    for ds in _series(series):
        assert ds.StudyInstanceUID == mr.StudyInstanceUID and ds.FrameOfReferenceUID == mr.FrameOfReferenceUID
        assert ds.PatientID == mr.PatientID and ds.PatientName == mr.PatientName
        assert ds.SeriesInstanceUID != mr.SeriesInstanceUID
        assert ds.SeriesNumber == mr.SeriesNumber + 1000 == 1003  # beside its MR in the series list
        assert ds.PatientPosition == mr.PatientPosition == "HFS"
        source = mr_by_uid[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]  # the MR slice it comes from
        assert ds.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
        purpose = ds.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float),
                                   np.asarray(source.ImagePositionPatient, float), atol=0.01)
        # The MR series, and the instance referred to, as a derived series names its source.
        (referenced,) = ds.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == mr.SeriesInstanceUID
        assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence
                ] == [(source.SOPClassUID, source.SOPInstanceUID)]
        assert "DerivationCodeSequence" not in ds  # CID 7203 has no code for a CT predicted from MR
        (equipment,) = ds.ContributingEquipmentSequence
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109100"
        assert equipment.Manufacturer == "medsynth"


def test_a_series_is_skipped_when_present_and_replaced_whole_with_overwrite(tmp_path, model, write_volume):
    write_volume(tmp_path / "in" / "a.nii.gz", make_head(1, (14, 16, 12), 6.0).mr, np.diag([6.0, 6.0, 6.0, 1.0]))
    _translate(model, tmp_path / "in", tmp_path / "out", "--format", "dicom", "--patient-position", "HFS")
    first = {ds.SOPInstanceUID for ds in _series(tmp_path / "out" / "a")}
    # No name given and none in a NIfTI: empty, not the file name; no MR series: the offset alone
    assert {(str(ds.PatientName), ds.PatientID, ds.SeriesNumber) for ds in _series(tmp_path / "out" / "a")
            } == {("", "a", 1000)}
    _translate(model, tmp_path / "in", tmp_path / "out", "--format", "dicom", "--patient-position", "HFS")
    assert {ds.SOPInstanceUID for ds in _series(tmp_path / "out" / "a")} == first
    _translate(model, tmp_path / "in", tmp_path / "out", "--format", "dicom", "--overwrite", "--patient-position",
               "HFS")
    again = _series(tmp_path / "out" / "a")
    assert len(again) == 12 and not first & {ds.SOPInstanceUID for ds in again}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "translate_report.json"]  # no leftovers


def test_dicom_is_refused_for_ct2mr_in_one_line(tmp_path, model, write_volume):
    write_volume(tmp_path / "a.nii.gz", make_head(1, (14, 16, 12), 6.0).ct, np.diag([6.0, 6.0, 6.0, 1.0]))
    result = CliRunner().invoke(app, ["translate", str(model), str(tmp_path / "a.nii.gz"), str(tmp_path / "out"),
                                      "--direction", "ct2mr", "--format", "dicom"])
    assert result.exit_code == 2 and "--format dicom writes synthetic CT" in result.output


def test_a_dicom_sct_always_has_a_patient_position_never_a_guessed_one(tmp_path, model, write_volume):
    write_volume(tmp_path / "in" / "a.nii.gz", make_head(1, (14, 16, 12), 6.0).mr, np.diag([6.0, 6.0, 6.0, 1.0]))
    result = CliRunner().invoke(app, ["translate", str(model), str(tmp_path / "in"), str(tmp_path / "out"),
                                      "--format", "dicom", "--device", "cpu"])
    assert result.exit_code == 2 and "--patient-position" in result.output and not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["translate", str(model), str(tmp_path / "in"), str(tmp_path / "out"),
                                      "--format", "dicom", "--patient-position", "sideways", "--device", "cpu"])
    assert result.exit_code == 2 and "not a DICOM Patient Position" in result.output
    result = CliRunner().invoke(app, ["translate", str(model), str(tmp_path / "in"), str(tmp_path / "out"),
                                      "--format", "dicom", "--patient-position", "HFS", "--series-number", "-1"])
    assert result.exit_code == 2 and "--series-number -1: a DICOM Series Number" in result.output


def test_a_given_patient_that_is_not_the_dicom_mrs_is_refused_not_ignored(tmp_path, model):
    """From a DICOM MR the sCT joins the MR's patient: --patient-id/--patient-name equal to the MR's are
    accepted, others refused with both values named (they were ignored without a word)."""
    files = write_mr_series(tmp_path / "in" / "mr_series", regular(24), "1.2.826.0.1.3680043.8.498.1")
    mr = pydicom.dcmread(files[0])
    # The MR's own values, as a user may type them: padded, a name with empty trailing components.
    _translate(model, tmp_path / "in" / "mr_series", tmp_path / "same", "--format", "dicom",
               "--patient-id", f" {mr.PatientID} ", "--patient-name", f"{mr.PatientName}^^")
    assert {ds.PatientID for ds in _series(tmp_path / "same" / "mr_series")} == {mr.PatientID}
    for option, value, key in (("--patient-id", "OTHER-1", "PatientID"), ("--patient-name", "Other^Person",
                                                                           "PatientName")):
        out = tmp_path / key
        result = CliRunner().invoke(app, ["translate", str(model), str(tmp_path / "in" / "mr_series"), str(out),
                                          "--format", "dicom", option, value, "--device", "cpu"])
        assert result.exit_code == 1 and "Traceback" not in result.output  # the case failed, its reason reported
        (case,) = json.loads((out / "translate_report.json").read_text())["cases"]
        assert case["status"] == "failed"
        assert f"{key} '{mr.get(key)}', {option} says '{value}'" in case["reason"]
        assert not list(out.glob("mr_series/*.dcm"))
