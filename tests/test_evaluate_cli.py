"""``medsynth evaluate`` end to end on NIfTI files: table, CSV, JSON, exit codes and error lines."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medsynth.cli.evaluate  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.io import ImageMeta, write_ct, write_image
from medsynth.metrics.report import CaseFailure, CaseResult, EvaluationReport, summarise

SHAPE = (24, 26, 22)
AFFINE = np.array([[1.2, 0, 0, -10.0], [0, 1.2, 0, 5.0], [0, 0, 1.5, 3.0], [0, 0, 0, 1]])
COLUMNS_2023 = ["case", "mae", "psnr", "ssim", "mae_air", "mae_soft", "mae_bone", "bone_dice", "error"]


def _head(seed: int) -> np.ndarray:
    """Integer HU: air around an ellipsoidal head with a skull, so every tissue class is present."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    radius = np.sqrt(sum((g / 0.8) ** 2 for g in grid))
    ct = np.where(radius < 1.0, 40.0, -1000.0)
    ct[(radius > 0.7) & (radius < 0.85)] = 900.0
    return ct + np.rint(np.random.default_rng(seed).normal(0.0, 5.0, SHAPE))


def _write(folder: Path, case: str, hu: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    return write_ct(folder / f"{case}.nii.gz", hu, ImageMeta.from_affine(affine, hu.shape))


def _cases(tmp_path: Path, offsets: dict[str, float]) -> tuple[Path, Path]:
    """REF/<case> heads and PRED/<case> = REF + offset HU everywhere."""
    for seed, (case, offset) in enumerate(offsets.items()):
        ref = _head(seed)
        _write(tmp_path / "ref", case, ref)
        _write(tmp_path / "pred", case, ref + offset)
    return tmp_path / "pred", tmp_path / "ref"


def _run(*args: object):
    return CliRunner().invoke(app, ["evaluate", *(str(a) for a in args)])


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_folders_give_a_table_csv_and_json(tmp_path):
    pred, ref = _cases(tmp_path, {"case_a": 10.0, "case_b": 20.0})
    result = _run(pred, ref, "--csv", tmp_path / "out" / "m.csv", "--json", tmp_path / "out" / "m.json")
    assert result.exit_code == 0, result.output
    rows_shown = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows_shown == ["case_a", "case_b", "mean", "sd"]

    with open(tmp_path / "out" / "m.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS_2023
    assert [r["case"] for r in rows] == ["case_a", "case_b"]
    # A constant offset d everywhere: MAE = d in every tissue, PSNR = 10·log10(4024²/d²), Dice 1.
    for row, d in zip(rows, (10.0, 20.0), strict=True):
        for column in ("mae", "mae_air", "mae_soft", "mae_bone"):
            assert float(row[column]) == pytest.approx(d)
        assert float(row["psnr"]) == pytest.approx(10 * math.log10(4024**2 / d**2))
        assert float(row["bone_dice"]) == 1.0 and row["error"] == ""

    report = json.loads((tmp_path / "out" / "m.json").read_text())
    assert report["protocol"] == "synthrad2023" and report["failures"] == []
    assert report["metrics"] == COLUMNS_2023[1:-1]
    mae = report["summary"]["mae"]  # mean of 10 and 20; sample sd sqrt((25 + 25) / 1)
    assert mae == {"mean": pytest.approx(15.0), "sd": pytest.approx(math.sqrt(50)), "n": 2}
    assert [c["case"] for c in report["cases"]] == ["case_a", "case_b"]


def test_synthrad2025_on_single_files_with_different_names(tmp_path):
    ref = _head(0)
    ref_path = _write(tmp_path, "reference", ref)
    pred_path = _write(tmp_path, "synthetic", ref)
    result = _run(pred_path, ref_path, "--protocol", "synthrad2025", "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    case = json.loads((tmp_path / "m.json").read_text())["cases"][0]
    assert case["case"] == "reference"
    assert case["mae"] == 0.0 and case["psnr"] is None  # identical: PSNR = +inf, JSON null
    assert case["ms_ssim"] == pytest.approx(1.0)


def test_a_mask_folder_restricts_the_evaluation(tmp_path):
    ref = _head(0)
    inside = np.zeros(SHAPE, bool)
    inside[6:18, 6:20, 5:17] = True
    _write(tmp_path / "ref", "c", ref)
    _write(tmp_path / "pred", "c", np.where(inside, ref + 10.0, ref + 300.0))
    write_image(tmp_path / "mask" / "c.nii.gz", inside.astype(np.uint8), ImageMeta.from_affine(AFFINE, SHAPE))
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    masked = _run(pred, ref, "--mask", tmp_path / "mask", "--json", tmp_path / "m.json")
    assert masked.exit_code == 0, masked.output
    assert json.loads((tmp_path / "m.json").read_text())["cases"][0]["mae"] == pytest.approx(10.0)
    # Without --mask the reference's body mask reaches beyond the cube, where the error is 300 HU.
    assert _run(pred, ref, "--json", tmp_path / "b.json").exit_code == 0
    assert json.loads((tmp_path / "b.json").read_text())["cases"][0]["mae"] > 100.0


def test_a_case_without_its_mask_fails_alone(tmp_path):
    pred, ref = _cases(tmp_path, {"case_a": 10.0, "case_b": 10.0})
    meta = ImageMeta.from_affine(AFFINE, SHAPE)
    write_image(tmp_path / "mask" / "case_a.nii.gz", np.ones(SHAPE, np.uint8), meta)  # all-ones: valid
    result = _run(pred, ref, "--mask", tmp_path / "mask", "--json", tmp_path / "m.json")
    assert result.exit_code == 1
    assert "no mask for case 'case_b'" in _one_error_line(result)
    document = json.loads((tmp_path / "m.json").read_text())
    assert [c["case"] for c in document["cases"]] == ["case_a"]
    assert document["cases"][0]["mae"] == pytest.approx(10.0)


def test_a_missing_prediction_fails_that_case_and_exits_1(tmp_path):
    pred, ref = _cases(tmp_path, {"case_a": 10.0, "case_b": 10.0})
    (pred / "case_b.nii.gz").unlink()
    result = _run(pred, ref, "--csv", tmp_path / "m.csv")
    assert result.exit_code == 1
    assert "case_a" in result.stdout
    line = _one_error_line(result)
    assert "case_b" in line and "no prediction" in line
    with open(tmp_path / "m.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["mae"] == "", "no prediction" in r["error"]) for r in rows] == [
        ("case_a", False, False), ("case_b", True, True)]


def _empty_pred_folder(tmp_path: Path) -> tuple[Path, Path, str]:
    _write(tmp_path / "ref", "c", _head(0))
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "notes.txt").write_text("not an image")
    return tmp_path / "pred", tmp_path / "ref", "holds no images"


def _shifted_affine(tmp_path: Path) -> tuple[Path, Path, str]:
    _write(tmp_path / "ref", "c", _head(0))
    _write(tmp_path / "pred", "c", _head(0), AFFINE + np.array([[0, 0, 0, 0.5]] + [[0] * 4] * 3))
    return tmp_path / "pred", tmp_path / "ref", "affine differs"


def _other_shape(tmp_path: Path) -> tuple[Path, Path, str]:
    _write(tmp_path / "ref", "c", _head(0))
    _write(tmp_path / "pred", "c", _head(0)[:, :, :-2])
    return tmp_path / "pred", tmp_path / "ref", "resample it onto the reference grid"


def _text_file(tmp_path: Path) -> tuple[Path, Path, str]:
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path / "notes.txt", _write(tmp_path, "c", _head(0)), "not a supported image"


def _no_common_case(tmp_path: Path) -> tuple[Path, Path, str]:
    _write(tmp_path / "ref", "c", _head(0))
    _write(tmp_path / "pred", "d", _head(0))
    return tmp_path / "pred", tmp_path / "ref", "has a reference of the same name"


@pytest.mark.parametrize("make", [_empty_pred_folder, _shifted_affine, _other_shape, _text_file,
                                  _no_common_case])
def test_unusable_input_is_one_error_line_and_exit_2(tmp_path, make):
    pred, ref, message = make(tmp_path)
    result = _run(pred, ref)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert message in line and str(pred.name) in line


def test_an_unwritable_csv_is_exit_2(tmp_path):
    pred, ref = _cases(tmp_path, {"c": 5.0})
    (tmp_path / "file").write_text("")
    result = _run(pred, ref, "--csv", tmp_path / "file" / "m.csv")
    assert result.exit_code == 2
    assert "cannot be written" in _one_error_line(result)


def test_summary_leaves_out_nan_and_uses_the_sample_sd():
    summary = summarise([1.0, 2.0, 3.0, math.nan])  # sd = sqrt(((1−2)² + 0 + (3−2)²) / (3 − 1)) = 1
    assert (summary.mean, summary.sd, summary.n) == (2.0, 1.0, 3)
    single = summarise([4.0])
    assert (single.mean, single.n) == (4.0, 1) and math.isnan(single.sd)
    assert summarise([math.nan]).n == 0


def test_report_json_writes_undefined_values_as_null(tmp_path):
    report = EvaluationReport("synthrad2023", ("mae", "mae_bone"),
                              [CaseResult("a", {"mae": 5.0, "mae_bone": math.nan}),
                               CaseResult("b", {"mae": 7.0, "mae_bone": 30.0})],
                              [CaseFailure("c", "broken")])
    document = json.loads(report.to_json(tmp_path / "r.json").read_text())
    assert document["cases"][0] == {"case": "a", "mae": 5.0, "mae_bone": None}
    assert document["summary"]["mae_bone"] == {"mean": 30.0, "sd": None, "n": 1}
    assert document["failures"] == [{"case": "c", "reason": "broken"}]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


@pytest.mark.parametrize("outside", ["couch", "padding"])
def test_a_perfect_prediction_scores_zero_with_a_couch_or_padding_in_the_reference(tmp_path, outside):
    """The default mask holds the patient only: a couch touching the body (which no sCT from MR shows) and
    padding below the scanner's range (which no int16-HU sCT can hold) are never scored."""
    ref = _head(0)
    patient = ref.copy()
    if outside == "couch":  # a 2-voxel carbon-fibre shell over foam, touching the lowest skin row
        lowest = int(np.max(np.where((ref > -500).any(axis=(0, 2)))[0]))
        ref[2:22, lowest + 1:lowest + 3, :] = 250.0
        ref[2:22, lowest + 3:, :] = -850.0
    else:  # outside the reconstruction circle, reaching into the head
        ref[:, :, :6] = -3024.0
        patient = np.clip(ref, -1024, 3071)
    meta = ImageMeta.from_affine(AFFINE, SHAPE)
    write_image(tmp_path / "ref" / "case.nii.gz", ref.astype(np.int16), meta, np.int16)
    _write(tmp_path / "pred", "case", patient)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"),
                                      "--json", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    case = json.loads((tmp_path / "scores.json").read_text())["cases"][0]
    assert case["mae"] == 0.0 and case["ssim"] > 0.999, case


def test_segmentation_metrics_are_hu_classes_with_monai_dice_and_hd95_in_mm(tmp_path):
    """--segmentation: a perfect sCT scores Dice 1 and HD95 0 in every class; bone painted one voxel (1.2 mm)
    further along x scores an HD95 of 1.2 mm and a Dice below 1."""
    ref = _head(0)
    shifted = ref.copy()
    shifted[1:] = ref[:-1]  # everything one voxel along x: 1.2 mm on AFFINE's grid
    _write(tmp_path / "ref", "case", ref)
    _write(tmp_path / "perfect", "case", ref)
    _write(tmp_path / "shifted", "case", shifted)
    for name, dice, hd95 in (("perfect", 1.0, 0.0), ("shifted", None, 1.2)):
        result = CliRunner().invoke(app, ["evaluate", str(tmp_path / name), str(tmp_path / "ref"), "--segmentation",
                                          "--json", str(tmp_path / f"{name}.json")])
        assert result.exit_code == 0, result.output
        case = json.loads((tmp_path / f"{name}.json").read_text())["cases"][0]
        assert case["hu_hd95_bone_mm"] == pytest.approx(hd95, abs=1e-3), case
        assert case["hu_dice_bone"] == pytest.approx(dice) if dice else case["hu_dice_bone"] < 0.95
        assert {"hu_dice_air", "hu_dice_soft", "hu_hd95_air_mm", "hu_hd95_soft_mm"} <= set(case)
