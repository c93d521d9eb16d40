"""``train FAMILY DATA --out RUN --val``: a validation-only run of a trained model (nnU-Net's ``--val``) writes
the table training wrote at its last validation, figure for figure, and trains nothing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from tiny import MODEL, TRAIN, one_error_line, run_cli

from medsynth.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, paired_phantom) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("val")
    data = paired_phantom(root / "data", cases=3, shape=(20, 24, 20), spacing=7.0)
    run = root / "run"
    train("pix2pix", data, run, {**TRAIN, "val_every": 2}, {**MODEL, "val_cases": 1})
    return data, run


def _table(run: Path) -> tuple[dict, list[dict[str, str]]]:
    summary = json.loads((run / "validation" / "summary.json").read_text())
    with open(run / "validation" / "cases.csv", newline="") as file:
        return summary, list(csv.DictReader(file))


def test_the_validation_only_run_repeats_the_last_validation_of_training(trained, tmp_path):
    data, run = trained
    copy = shutil.copytree(run, tmp_path / "run")
    by_training, rows_by_training = _table(copy)
    logged = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    assert by_training["source"] == "training" and by_training["step"] == 2
    assert by_training["means"] == [e["validation"] for e in logged if "validation" in e][-1]
    assert [row["case"] for row in rows_by_training] == json.loads((copy / "split.json").read_text())[0]["val"]
    model_before = (copy / "model.safetensors").read_bytes()

    result = run_cli("train", "pix2pix", data, "--out", copy, "--val", "--device", "cpu")

    assert result.exit_code == 0, result.output
    assert "validated the model of step 2" in result.output
    by_validation, rows_by_validation = _table(copy)
    assert by_validation["means"] == by_training["means"] and by_validation["step"] == 2
    assert by_validation["cases"] == by_training["cases"] and rows_by_validation == rows_by_training
    assert by_validation["source"].endswith("(train --val)")
    assert (copy / "model.safetensors").read_bytes() == model_before  # nothing trained


def test_val_takes_only_the_device_and_refuses_other_data_and_unfinished_runs(trained, tmp_path, paired_phantom):
    data, run = trained
    assert "drop --steps" in one_error_line(run_cli("train", "pix2pix", data, "--out", run, "--val", "--steps", "3"))
    other = paired_phantom(tmp_path / "other", cases=3, shape=(20, 24, 22), spacing=7.0)  # same ids
    assert "is not the data" in one_error_line(run_cli("train", "pix2pix", other, "--out", run, "--val"))
    assert "no finished run" in one_error_line(run_cli("train", "pix2pix", data, "--out", tmp_path / "none", "--val"))
    assert "is a pix2pix run" in one_error_line(run_cli("train", "vagan", data, "--out", run, "--val"))
