"""The spread → expected-error calibration (issue 29 part 2): fitted as a property on known data, stored in the
model file after training on its validation cases, applied by translate (expected-error map, predicted MAE with
an interval, the QA line), and a model without it still translates and says why there is no expected error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import MODEL, TRAIN, run_cli

from medsynth.io import read_image
from medsynth.metrics.calibration import ErrorCalibration, fit_error_calibration, spread_kind
from medsynth.modelfile import load_model, update_metadata
from medsynth.phantom.kinds import write_phantom
from medsynth.services.evaluate import evaluate_folders
from medsynth.training import train


def test_the_curve_recovers_a_known_error_law_and_never_falls():
    rng = np.random.default_rng(0)
    cases = []
    for name, gain in (("a", 1.8), ("b", 2.2)):
        std = rng.gamma(2.0, 10.0, (30, 30, 30)).astype(np.float32)
        error = np.abs(rng.normal(0.0, gain * std * np.sqrt(np.pi / 2)))  # E|error| = gain·std
        cases.append((name, error, std, np.ones(std.shape, bool), np.ones(std.shape, bool)))
    curve = fit_error_calibration(cases, "tta")
    assert all(b >= a for a, b in zip(curve.error_hu, curve.error_hu[1:], strict=False))  # non-decreasing
    probe = np.array([10.0, 20.0, 40.0])
    np.testing.assert_allclose(curve.expected_error(probe), 2.0 * probe, rtol=0.12)
    beyond = curve.expected_error(np.array([10 * max(curve.spread_hu)]))  # extrapolated, not clipped
    assert beyond[0] > 5 * max(curve.error_hu)
    assert curve.cases == ("a", "b") and sorted(curve.case_ratios) == pytest.approx([0.9, 1.1], abs=0.05)
    mae, low, high = curve.predicted_mae(curve.expected_error(cases[0][2]), cases[0][3])
    assert low < cases[0][1].mean() < high and low < mae < high  # few cases: a widened interval holds both
    assert ErrorCalibration.from_json(json.loads(json.dumps(curve.to_json()))) == curve


def test_spread_kind_names_what_the_passes_measure():
    assert spread_kind(tta=True, flips=True, mc_dropout=False, samples=4) == "tta"
    assert spread_kind(tta=True, flips=True, mc_dropout=True, samples=4) == "tta+mc-dropout"
    assert spread_kind(tta=False, flips=True, mc_dropout=True, samples=4) == "mc-dropout"
    assert spread_kind(tta=True, flips=False, mc_dropout=False, samples=4) is None  # no flips: no spread
    assert spread_kind(tta=True, flips=True, mc_dropout=True, samples=0) is None


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    data = root / "data"
    write_phantom("paired", data, cases=4, shape=(32, 40, 32), spacing=5.0, seed=3)
    run = root / "run"
    train("pix2pix", data, run, {**TRAIN, "steps": 20}, {**MODEL, "val_cases": 2})
    return data, run, json.loads((run / "split.json").read_text())[0]["val"]


def test_training_stores_a_calibration_fitted_on_its_validation_cases(calibrated):
    _, run, val = calibrated
    stored = load_model(run).metadata["error_calibration"]
    assert sorted(stored["cases"]) == sorted(val) and stored["spread"] == "tta"
    assert len(stored["case_ratios"]) == len(val) and stored["error_hu"][-1] > 0


def test_translate_predicts_the_mae_it_then_measures_on_a_validation_case(calibrated, tmp_path):
    data, run, val = calibrated
    mr = tmp_path / "mr"
    mr.mkdir()
    (mr / f"{val[0]}.nii.gz").symlink_to((data / "mr" / f"{val[0]}.nii.gz").resolve())
    out = tmp_path / "sct"
    result = run_cli("translate", run, mr, out, "--tta", "--uncertainty", "4", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"QA {val[0]}: predicted MAE" in result.output
    error_map = read_image(out / f"{val[0]}_error.nii.gz").array
    assert error_map.shape == read_image(out / f"{val[0]}.nii.gz").array.shape and error_map.min() >= 0
    case = json.loads((out / "translate_report.json").read_text())["cases"][0]
    predicted, low, high = case["predicted_mae_hu"]
    measured = evaluate_folders(out, data / "ct", data / "mask").results[0].metrics["mae"]  # the protocol's mask
    assert low <= measured <= high and abs(predicted - measured) < 0.5 * measured, (predicted, measured)


def test_a_model_without_calibration_translates_and_says_why_there_is_no_expected_error(calibrated, tmp_path):
    data, run, val = calibrated
    model = tmp_path / "old" / "model.safetensors"
    model.parent.mkdir()
    model.write_bytes((run / "model.safetensors").read_bytes())
    update_metadata(model, {"error_calibration": None})
    out = tmp_path / "sct"
    result = run_cli("translate", model, data / "mr" / f"{val[0]}.nii.gz", out, "--tta", "--uncertainty", "4",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    case = json.loads((out / "translate_report.json").read_text())["cases"][0]
    assert case["predicted_mae_hu"] is None and "holds no calibration" in case["expected_error"]
    assert not list(out.glob("*_error*"))
    without_tta = run_cli("translate", run, data / "mr" / f"{val[0]}.nii.gz", tmp_path / "mc", "--uncertainty", "4",
                          "--device", "cpu")
    assert without_tta.exit_code == 2  # a deterministic model needs --tta for any spread (unchanged refusal)


def test_a_dicom_sct_carries_its_qa_line(calibrated, tmp_path):
    import pydicom

    data, run, val = calibrated
    out = tmp_path / "dicom"
    result = run_cli("translate", run, data / "mr" / f"{val[0]}.nii.gz", out, "--tta", "--uncertainty", "4",
                     "--format", "dicom", "--patient-position", "HFS", "--device", "cpu")
    assert result.exit_code == 0, result.output
    first = pydicom.dcmread(next((out / val[0]).glob("*.dcm")), stop_before_pixels=True)
    assert first.ImageComments.startswith("QA ") and "predicted MAE" in first.ImageComments


def test_a_rerun_skips_a_case_whose_expected_error_map_is_there_and_redoes_one_without(calibrated, tmp_path):
    data, run, val = calibrated
    mr, out = data / "mr" / f"{val[0]}.nii.gz", tmp_path / "sct"
    args = ("translate", run, mr, out, "--tta", "--uncertainty", "4", "--device", "cpu")
    assert run_cli(*args).exit_code == 0
    again = json.loads((out / "translate_report.json").read_text()) if run_cli(*args).exit_code == 0 else None
    assert again["skipped"] == 1
    (out / f"{val[0]}_error.nii.gz").unlink()
    assert run_cli(*args).exit_code == 0 and (out / f"{val[0]}_error.nii.gz").exists()


def test_gamma_overlap_counts_the_failures_the_expected_error_flags():
    from medsynth.dose.evaluate import dose_metric_names, gamma_overlap
    from medsynth.dose.protocol import DoseSettings, Modality

    body = np.zeros((10, 10, 10), bool)
    body[1:9, 1:9, 1:9] = True
    gamma = np.where(body, 0.5, np.nan)
    gamma[2:4, 2:6, 2:6] = 1.5  # the failures
    expected = np.full(body.shape, 20.0)
    expected[2:4, 2:6, 2:6] = 150.0  # flagged where they are
    expected[2:4, 2:4, 2:4] = 60.0  # except a corner, still ranked above the rest
    found = gamma_overlap(gamma, expected, body)
    assert found["gamma_fail_flagged"] == pytest.approx(100.0 * 24 / 32) and found["gamma_fail_auroc"] == 1.0
    assert gamma_overlap(gamma, -expected, body)["gamma_fail_auroc"] == 0.0  # a map pointing away scores 0
    assert np.isnan(gamma_overlap(np.where(body, 0.5, np.nan), expected, body)["gamma_fail_flagged"])  # none fail
    names = dose_metric_names(Modality.photon, DoseSettings(), expected_error=True)
    assert "photon_gamma_fail_flagged" in names and "photon_gamma_fail_auroc" in names
    assert "photon_gamma_fail_auroc" not in dose_metric_names(Modality.photon, DoseSettings())
