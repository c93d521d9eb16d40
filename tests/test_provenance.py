"""Every output says which model made it, an ensemble counts each model once, and stale outputs of another
model are never passed off as fresh ones (issue 25, items 4 and 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
from tiny import one_error_line, run_cli, tiny_run

from medsynth.modelfile import model_fingerprint


@pytest.fixture(scope="module")
def setting(tmp_path_factory, paired_phantom) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("provenance")
    data = paired_phantom(root / "data", cases=2, shape=(20, 24, 20), spacing=7.0)
    return {"data": data, "first": tiny_run(data, root / "runs" / "first"),
            "second": tiny_run(data, root / "runs" / "second", seed=1)}


def test_outputs_and_the_report_name_the_model(setting, tmp_path):
    first = setting["first"]
    fingerprint = model_fingerprint(first / "model.safetensors")
    assert run_cli("translate", first, setting["data"] / "mr", tmp_path / "out", "--device", "cpu").exit_code == 0
    for output in (tmp_path / "out").glob("*.nii.gz"):
        assert f"medsynth model {fingerprint}" in nib.load(output).header["descrip"].tobytes().decode()
    assert json.loads((tmp_path / "out" / "translate_report.json").read_text())["model"] == fingerprint
    assert run_cli("translate", first, setting["data"] / "mr", tmp_path / "mha", "--format", "mha",
                "--device", "cpu").exit_code == 0
    from medsynth.io.image import read_stamp

    assert all(fingerprint in read_stamp(p) for p in (tmp_path / "mha").glob("*.mha"))
    assert run_cli("translate", first, setting["data"] / "mr" / "case_0.nii.gz", tmp_path / "dicom", "--format",
                "dicom", "--patient-position", "HFS", "--device", "cpu").exit_code == 0
    header = pydicom.dcmread(next((tmp_path / "dicom" / "case_0").glob("*.dcm")), stop_before_pixels=True)
    assert fingerprint in header.DerivationDescription


def test_another_models_outputs_are_refused_the_same_models_skipped(setting, tmp_path):
    out, mr = tmp_path / "out", setting["data"] / "mr"
    assert run_cli("translate", setting["first"], mr, out, "--device", "cpu").exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = run_cli("translate", setting["first"], mr, out, "--device", "cpu")
    assert again.exit_code == 0 and "made by this model" in json.dumps(
        json.loads((out / "translate_report.json").read_text()))
    line = one_error_line(run_cli("translate", setting["second"], mr, out, "--device", "cpu"))
    assert "made by model" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == before  # nothing rewritten
    second = model_fingerprint(setting["second"] / "model.safetensors")
    assert run_cli("translate", setting["second"], mr, out, "--device", "cpu", "--overwrite").exit_code == 0
    assert all(second in nib.load(p).header["descrip"].tobytes().decode() for p in out.glob("case_*.nii.gz"))


def test_export_never_writes_into_its_run_folder(setting):
    first = setting["first"]
    line = one_error_line(run_cli("export", first, first / "x.onnx"))
    assert "inside the input folder" in line and not (first / "x.onnx").exists()
    line = one_error_line(run_cli("export", first / "model.safetensors", first / "checkpoints" / "x.onnx"))
    assert not (first / "checkpoints" / "x.onnx").exists()


def test_an_ensemble_counts_a_run_and_its_own_export_once(setting, tmp_path):
    pytest.importorskip("onnxruntime")
    ensemble = tmp_path / "ensemble"
    shutil.copytree(setting["first"], ensemble / "first")
    assert run_cli("export", setting["first"], ensemble / "first.onnx").exit_code == 0
    line = one_error_line(run_cli("translate", ensemble, setting["data"] / "mr", tmp_path / "out", "--engine",
                                "onnxruntime", "--device", "cpu"))
    assert "same model" in line and "first.onnx" in line and not (tmp_path / "out").exists()
    shutil.copytree(setting["second"], ensemble / "second")  # two models and a duplicate: still refused
    assert "same model" in one_error_line(run_cli("translate", ensemble, setting["data"] / "mr", tmp_path / "o2",
                                                "--engine", "onnxruntime", "--device", "cpu"))
    (ensemble / "first.onnx").unlink()
    assert run_cli("translate", ensemble, setting["data"] / "mr", tmp_path / "o3", "--device", "cpu").exit_code == 0
