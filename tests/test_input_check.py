"""Trust without a CT, the input check: the model file records its training MR's features; translate says per
case how far an input lies from them — a training-like head is in range, another contrast or another field of
view is flagged (the sCT is still written)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.profile import check_input, mr_features, training_profile
from medsynth.modelfile import load_model
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

TRAIN = {"steps": 2, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}
SHAPE, SPACING = (28, 32, 28), 6.0


def test_distance_is_in_scales_of_the_training_spread_with_floors():
    profile = training_profile([{"q50": 0.0, "volume_l": 2.0}, {"q50": 0.02, "volume_l": 2.2}])
    assert check_input({"q50": 0.05, "volume_l": 2.1}, profile).unusual is False
    far = check_input({"q50": 0.6, "volume_l": 2.1}, profile)  # floor 0.1: (0.6 - 0.01) / 0.1 = 5.9
    assert far.unusual and far.reasons[0].startswith("q50") and far.distance == pytest.approx(5.9)
    assert check_input({}, profile) is None


def test_features_follow_the_body_not_the_background():
    image = np.full((20, 20, 10), -1.0, np.float32)
    image[5:15, 4:16, 2:8] = 0.5
    features = mr_features(image, (2.0, 2.0, 3.0))
    assert features["q50"] == pytest.approx(0.5) and features["volume_l"] == pytest.approx(10 * 12 * 6 * 12 / 1e6)
    assert (features["extent_x_mm"], features["extent_y_mm"], features["extent_z_mm"]) == (20.0, 24.0, 18.0)


def test_translate_flags_an_unlike_input_and_passes_a_training_like_one(tmp_path, paired_phantom):
    data = paired_phantom(tmp_path / "data", cases=3, shape=SHAPE, spacing=SPACING)
    run = train("pix2pix", data, tmp_path / "run", TRAIN, MODEL).run_dir
    assert set(load_model(run).metadata["input_profile"]) >= {"q50", "volume_l", "extent_z_mm"}
    head = make_head((9, 1), SHAPE, SPACING, t2=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(head.mr.astype(np.float32), head.affine), str(inputs / "like.nii.gz"))
    # Another contrast: the head's intensities reversed inside the body (bright where T1 is dark, as fluid on
    # T2). The phantom's own T2 keeps T1's layout too closely to be told apart by these features (distance ~1).
    body = head.mr > 0.1 * head.mr.max()
    reversed_contrast = np.where(body, head.mr.max() - head.mr, head.mr)
    nib.save(nib.Nifti1Image(reversed_contrast.astype(np.float32), head.affine), str(inputs / "reversed.nii.gz"))
    cropped = head.mr[:, :, : SHAPE[2] // 3]  # the top of the head only: another field of view
    nib.save(nib.Nifti1Image(cropped.astype(np.float32), head.affine), str(inputs / "top.nii.gz"))
    result = CliRunner().invoke(app, ["translate", str(run), str(inputs), str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    checks = {c["case"]: c["input_check"] for c in
              json.loads((tmp_path / "out" / "translate_report.json").read_text())["cases"]}
    assert checks["like"].startswith("in range"), checks
    assert checks["reversed"].startswith("unusual") and checks["top"].startswith("unusual"), checks
    assert "unlike the model's training MR" in result.output
    assert all((tmp_path / "out" / f"{c}.nii.gz").is_file() for c in checks)  # written all the same
