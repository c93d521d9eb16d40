"""Every output says which model made it, an ensemble counts each model once, and stale outputs of another
model are never passed off as fresh ones (issue 25, items 4 and 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.modelfile import model_fingerprint
from medsynth.training import train

TRAIN = {"steps": 2, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}


def _run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.fixture(scope="module")
def setting(tmp_path_factory, paired_phantom) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("provenance")
    data = paired_phantom(root / "data", cases=2, shape=(20, 24, 20), spacing=7.0)
    train("pix2pix", data, root / "runs" / "first", TRAIN, MODEL)
    train("pix2pix", data, root / "runs" / "second", {**TRAIN, "seed": 1}, MODEL)
    return {"data": data, "first": root / "runs" / "first", "second": root / "runs" / "second"}


def test_outputs_and_the_report_name_the_model(setting, tmp_path):
    first = setting["first"]
    fingerprint = model_fingerprint(first / "model.safetensors")
    assert _run("translate", first, setting["data"] / "mr", tmp_path / "out", "--device", "cpu").exit_code == 0
    for output in (tmp_path / "out").glob("*.nii.gz"):
        assert f"medsynth model {fingerprint}" in nib.load(output).header["descrip"].tobytes().decode()
    assert json.loads((tmp_path / "out" / "translate_report.json").read_text())["model"] == fingerprint
    assert _run("translate", first, setting["data"] / "mr", tmp_path / "mha", "--format", "mha",
                "--device", "cpu").exit_code == 0
    from medsynth.io.image import read_stamp

    assert all(fingerprint in read_stamp(p) for p in (tmp_path / "mha").glob("*.mha"))
    assert _run("translate", first, setting["data"] / "mr" / "case_0.nii.gz", tmp_path / "dicom", "--format",
                "dicom", "--patient-position", "HFS", "--device", "cpu").exit_code == 0
    header = pydicom.dcmread(next((tmp_path / "dicom" / "case_0").glob("*.dcm")), stop_before_pixels=True)
    assert fingerprint in header.DerivationDescription


def test_another_models_outputs_are_refused_the_same_models_skipped(setting, tmp_path):
    out, mr = tmp_path / "out", setting["data"] / "mr"
    assert _run("translate", setting["first"], mr, out, "--device", "cpu").exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = _run("translate", setting["first"], mr, out, "--device", "cpu")
    assert again.exit_code == 0 and "made by this model" in json.dumps(
        json.loads((out / "translate_report.json").read_text()))
    line = _one_error_line(_run("translate", setting["second"], mr, out, "--device", "cpu"))
    assert "made by model" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == before  # nothing rewritten
    second = model_fingerprint(setting["second"] / "model.safetensors")
    assert _run("translate", setting["second"], mr, out, "--device", "cpu", "--overwrite").exit_code == 0
    assert all(second in nib.load(p).header["descrip"].tobytes().decode() for p in out.glob("case_*.nii.gz"))


def test_export_never_writes_into_its_run_folder(setting):
    first = setting["first"]
    line = _one_error_line(_run("export", first, first / "x.onnx"))
    assert "inside the input folder" in line and not (first / "x.onnx").exists()
    line = _one_error_line(_run("export", first / "model.safetensors", first / "checkpoints" / "x.onnx"))
    assert not (first / "checkpoints" / "x.onnx").exists()


def test_an_ensemble_counts_a_run_and_its_own_export_once(setting, tmp_path):
    pytest.importorskip("onnxruntime")
    ensemble = tmp_path / "ensemble"
    shutil.copytree(setting["first"], ensemble / "first")
    assert _run("export", setting["first"], ensemble / "first.onnx").exit_code == 0
    line = _one_error_line(_run("translate", ensemble, setting["data"] / "mr", tmp_path / "out", "--engine",
                                "onnxruntime", "--device", "cpu"))
    assert "same model" in line and "first.onnx" in line and not (tmp_path / "out").exists()
    shutil.copytree(setting["second"], ensemble / "second")  # two models and a duplicate: still refused
    assert "same model" in _one_error_line(_run("translate", ensemble, setting["data"] / "mr", tmp_path / "o2",
                                                "--engine", "onnxruntime", "--device", "cpu"))
    (ensemble / "first.onnx").unlink()
    assert _run("translate", ensemble, setting["data"] / "mr", tmp_path / "o3", "--device", "cpu").exit_code == 0
