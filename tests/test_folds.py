"""K-fold splits (RUN/split.json, nnU-Net style) and ensembles of runs in ``translate``: folds partition the
cases, a run keeps its split, an ensemble is the mean of its members with their spread as uncertainty, and
models that disagree in grid or normalisation are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.splits import SplitPlan, k_fold
from medsynth.errors import UsageError
from medsynth.phantom.anatomy import make_head

TRAIN = ["--steps", "2", "--batch-size", "1", "--val-every", "0", "--ckpt-every", "100", "--device", "cpu"]
MODEL = "model:\n  patch_size: [16, 16, 16]\n  channels: [8, 16]\n  disc_channels: 8\n  disc_layers: 2\n"


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line and line.count("\n") == 0, result.stderr
    return line


@pytest.mark.parametrize("cases,folds", [(3, 3), (7, 3), (10, 5), (12, 4), (5, 2)])
def test_folds_partition_the_cases_reproducibly(cases, folds):
    ids = [f"case_{i:02d}" for i in range(cases)]
    split = k_fold(ids, folds, seed=3)
    assert len(split) == folds
    validation = [c for fold in split for c in fold["val"]]
    assert sorted(validation) == ids  # every case validates exactly once
    sizes = [len(fold["val"]) for fold in split]
    assert max(sizes) - min(sizes) <= 1
    for fold in split:
        assert sorted(fold["train"] + fold["val"]) == ids and not set(fold["train"]) & set(fold["val"])
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
    assert k_fold(list(reversed(ids)), folds, seed=3) == split  # the order cases are found in does not matter
    assert any(k_fold(ids, folds, seed=s) != split for s in range(4, 8))


def test_a_split_file_is_reused_and_refused_when_the_cases_changed(tmp_path):
    ids = [f"c{i}" for i in range(8)]
    path = tmp_path / "split.json"
    first = SplitPlan(seed=1, path=path).split(ids)
    assert len(first.val) == 1 and json.loads(path.read_text()) == [{"train": first.train, "val": first.val}]
    # Another seed reads the same file: the run keeps its validation cases.
    assert SplitPlan(seed=99, path=path).split(ids).val == first.val
    with pytest.raises(UsageError, match="other cases"):
        SplitPlan(seed=1, path=path).split(ids[:-1])
    with pytest.raises(UsageError, match="go together"):
        SplitPlan(fold=1)
    with pytest.raises(UsageError, match="at least 4 cases"):
        SplitPlan(fold=0, folds=4).split(ids[:3])


# ---------------------------------------------------------------------------------------- CLI and ensembles


@pytest.fixture(scope="module")
def folds(tmp_path_factory, paired_phantom) -> Path:
    """Three fold runs of one experiment in ``folds/fold_k``."""
    root = tmp_path_factory.mktemp("folds")
    paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    (root / "model.yaml").write_text(MODEL)
    for k in range(3):
        out = root / f"folds/fold_{k}"
        result = CliRunner().invoke(app, ["train", "pix2pix", str(root / "data"), "--out", str(out),
                                          "--config", str(root / "model.yaml"), "--fold", str(k), "--folds", "3",
                                          "--seed", "5", *TRAIN])
        assert result.exit_code == 0, (result.output, result.exception)
        assert f"fold {k} of 3: 2 training, 1 validation cases" in " ".join(result.output.split())
    return root


def test_fold_runs_share_one_split_file_whose_folds_they_train(folds):
    documents = [json.loads((folds / f"folds/fold_{k}/split.json").read_text()) for k in range(3)]
    assert documents[0] == documents[1] == documents[2]  # one seed, one split
    assert sorted(v for fold in documents[0] for v in fold["val"]) == ["case_0", "case_1", "case_2"]
    for k in range(3):
        config = (folds / f"folds/fold_{k}/config.yaml").read_text()
        assert f"fold: {k}" in config and "folds: 3" in config


def test_resume_keeps_the_split_and_refuses_another_fold(folds, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folds / "folds/fold_0", run)
    before = (run / "split.json").read_text()
    refused = CliRunner().invoke(app, ["train", "pix2pix", str(folds / "data"), "--out", str(run), "--resume",
                                       "--fold", "1", "--folds", "3", "--steps", "3"])
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr
    assert "fold: 0 -> 1" in refused.stderr.replace("'", ""), refused.stderr
    result = CliRunner().invoke(app, ["train", "pix2pix", str(folds / "data"), "--out", str(run), "--resume",
                                      "--steps", "3"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "fold 0 of 3" in result.output and (run / "split.json").read_text() == before


def test_a_run_without_validation_cases_says_so(tmp_path, paired_phantom):
    data = paired_phantom(tmp_path / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    (tmp_path / "model.yaml").write_text(MODEL)
    result = CliRunner().invoke(app, ["train", "pix2pix", str(data), "--out", str(tmp_path / "run"),
                                      "--config", str(tmp_path / "model.yaml"), *TRAIN])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "no validation cases: no best model" in " ".join(result.output.split())
    assert json.loads((tmp_path / "run/split.json").read_text()) == [
        {"train": ["case_0", "case_1", "case_2"], "val": []}]


def _translate(*args: object) -> None:
    result = CliRunner().invoke(app, ["translate", *(str(a) for a in args), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)


def _hu(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_an_ensemble_is_the_mean_of_its_members_and_its_spread_is_their_sd(folds, tmp_path, write_volume):
    # On the models' own 6 mm RAS grid, so that the spread needs no interpolation to compare with the members'.
    write_volume(tmp_path / "mr/a.nii.gz", make_head(9, (18, 16, 14), 6.0).mr, np.diag([6.0, 6.0, 6.0, 1.0]))
    members = []
    for k in range(3):
        _translate(folds / f"folds/fold_{k}", tmp_path / "mr", tmp_path / f"member_{k}")
        members.append(_hu(tmp_path / f"member_{k}/a.nii.gz"))
    _translate(folds / "folds", tmp_path / "mr", tmp_path / "ensemble", "--uncertainty", "2")
    ensemble = _hu(tmp_path / "ensemble/a.nii.gz")
    stack = np.stack(members)
    # Each member's file is rounded to whole HU, so its mean can sit 0.5 HU from the exact one; the
    # ensemble's own rounding adds another 0.5.
    assert np.abs(ensemble - stack.mean(0)).max() <= 1.0
    assert stack.std(0).max() > 5  # the folds really differ: the test can tell a mean from one member
    spread = np.asarray(nib.load(tmp_path / "ensemble/a_std.nii.gz").dataobj)
    assert spread.shape == ensemble.shape
    np.testing.assert_allclose(spread, stack.std(0, ddof=1), atol=1.0)


def test_models_that_disagree_are_refused_in_one_line(folds, tmp_path, write_volume):
    write_volume(tmp_path / "mr/a.nii.gz", make_head(9, (14, 16, 12), 7.0).mr, np.diag([7.0, 7.0, 7.0, 1.0]))
    mixed = tmp_path / "mixed"
    shutil.copytree(folds / "folds/fold_0", mixed / "a")
    (tmp_path / "other.yaml").write_text(MODEL + "  spacing: [7.0, 7.0, 7.0]\n")
    result = CliRunner().invoke(app, ["train", "pix2pix", str(folds / "data"), "--out", str(mixed / "b"),
                                      "--config", str(tmp_path / "other.yaml"), *TRAIN])
    assert result.exit_code == 0, (result.output, result.exception)
    line = _one_error_line(CliRunner().invoke(app, ["translate", str(mixed), str(tmp_path / "mr"),
                                                    str(tmp_path / "out"), "--device", "cpu"]))
    assert "grid" in line and str(mixed / "b") in line
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_error_line(CliRunner().invoke(app, ["translate", str(empty), str(tmp_path / "mr"),
                                                    str(tmp_path / "out"), "--device", "cpu"]))
    assert "no model" in line
