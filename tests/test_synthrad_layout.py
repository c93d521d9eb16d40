"""SynthRAD per-case folders (``TASK/<case>/mr.mha``, ``ct.mha``, ``mask.mha``) through train, translate and
evaluate with no renaming; layouts recognised whole or refused; two inputs never share one output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.io import read_image
from medsynth.phantom.kinds import write_phantom

TRAIN = ["--steps", "2", "--batch-size", "1", "--val-every", "0", "--ckpt-every", "100", "--device", "cpu",
         "--patch-size", "16"]
MODEL_YAML = "model:\n  channels: [8, 16]\n  disc_channels: 8\n  disc_layers: 2\ntrain:\n  preview_every: 100\n"


def _run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(result, code: int = 0):
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthrad")
    write_phantom("synthrad", root / "Task1" / "brain", cases=3, shape=(20, 24, 20), spacing=6.0)
    (root / "Task1" / "brain" / "overview").mkdir()  # SynthRAD's spreadsheet folder: no images, ignored
    (root / "Task1" / "brain" / "overview" / "1_brain_train.csv").write_text("case\n")
    return root / "Task1" / "brain"


@pytest.fixture(scope="module")
def model(task, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    config = root / "small.yaml"
    config.write_text(MODEL_YAML)
    _ok(_run("train", "pix2pix", task, "--out", root / "run", "--config", config, *TRAIN))
    return root / "run"


def test_a_task_folder_translates_to_one_distinct_output_per_case_and_evaluates(task, model, tmp_path):
    out = tmp_path / "pred"
    _ok(_run("translate", model, task, out, "--format", "mha", "--device", "cpu"))
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".json")) == [
        "case_000.mha", "case_001.mha", "case_002.mha"]
    for case in ("case_000", "case_001", "case_002"):
        written, mr = read_image(out / f"{case}.mha"), read_image(task / case / "mr.mha")
        assert written.array.shape == mr.array.shape
        np.testing.assert_allclose(written.meta.affine, mr.meta.affine, atol=1e-6)
    # The three cases are three translations, not one result written three times.
    assert len({read_image(out / f"case_00{i}.mha").array.tobytes() for i in range(3)}) == 3

    report = tmp_path / "metrics.json"
    _ok(_run("evaluate", out, task, "--json", report))
    document = json.loads(report.read_text())
    assert sorted(c["case"] for c in document["cases"]) == ["case_000", "case_001", "case_002"]
    # The masks are the tree's mask.mha: scoring with them given explicitly gives the same numbers.
    masks = tmp_path / "masks"
    masks.mkdir()
    for case in ("case_000", "case_001", "case_002"):
        shutil.copy(task / case / "mask.mha", masks / f"{case}.mha")
    explicit = tmp_path / "explicit.json"
    _ok(_run("evaluate", out, task, "--mask", masks, "--json", explicit))
    assert json.loads(explicit.read_text())["cases"] == document["cases"]


def test_one_case_folder_is_named_by_its_case_id(task, model, tmp_path):
    _ok(_run("translate", model, task / "case_001", tmp_path / "out", "--device", "cpu"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["case_001.nii.gz"]


def test_cyclegan_trains_from_case_folders_holding_mr_or_ct(task, tmp_path):
    data = tmp_path / "unpaired"
    shutil.copytree(task / "case_000", data / "a", ignore=shutil.ignore_patterns("ct.mha"))
    shutil.copytree(task / "case_001", data / "b", ignore=shutil.ignore_patterns("mr.mha"))
    shutil.copytree(task / "case_002", data / "c")
    config = tmp_path / "small.yaml"
    config.write_text(MODEL_YAML.replace("model:\n", "model:\n  seg_channels: [8, 16]\n  shape_weight: 0\n"
                                                      "  seg_pretrain_steps: 0\n"))
    result = _ok(_run("train", "cyclegan", data, "--out", tmp_path / "run", "--config", config, *TRAIN))
    assert (tmp_path / "run" / "model.safetensors").is_file(), result.output


@pytest.mark.parametrize("mess", ["loose_image", "foreign_file_in_case", "case_without_ct"])
def test_a_half_recognisable_tree_is_refused_before_training(task, tmp_path, mess):
    data = tmp_path / "task"
    shutil.copytree(task, data)
    if mess == "loose_image":
        shutil.copy(task / "case_000" / "mr.mha", data / "stray.mha")
    elif mess == "foreign_file_in_case":
        shutil.copy(task / "case_000" / "mr.mha", data / "case_001" / "t2.mha")
    else:
        (data / "case_002" / "ct.mha").unlink()
    config = tmp_path / "small.yaml"
    config.write_text(MODEL_YAML)
    line = _error_line(_run("train", "pix2pix", data, "--out", tmp_path / "run", "--config", config, *TRAIN))
    assert {"loose_image": "stray.mha", "foreign_file_in_case": "t2.mha", "case_without_ct": "case_002"}[mess] in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing trained or written


def test_two_inputs_that_would_share_an_output_are_refused_before_writing(task, model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(task / "case_000" / "mr.mha", folder / "a.mha")
    shutil.copy(task / "case_001" / "mr.mha", folder / "a_std.mha")  # a's std map would be named a_std.mha
    line = _error_line(_run("translate", model, folder, tmp_path / "out", "--tta", "--uncertainty", "2",
                            "--format", "mha", "--device", "cpu"))
    assert "a.mha" in line and "a_std.mha" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_every_case_folder_trains_under_its_case_id(model):
    """The split file and the model file list the three case folders, not the role name ``mr`` three times."""
    from medsynth.modelfile import load_model

    split = json.loads((model / "split.json").read_text())
    assert sorted(split[0]["train"] + split[0]["val"]) == ["case_000", "case_001", "case_002"]
    assert load_model(model).metadata["training_cases"] == len(split[0]["train"])


def test_folds_of_case_folders_partition_the_case_ids(task, tmp_path):
    from medsynth.data.layouts import discover_paired
    from medsynth.data.splits import SplitPlan, split_datalist

    held = []
    for fold in range(3):
        datalist, split = split_datalist(discover_paired(task, ("mr", "ct"), ("mask",)),
                                         SplitPlan(seed=0, fold=fold, folds=3), -1)
        assert [c.id for c in datalist.validation] == split.val and len(split.train) == 2
        assert all(case["mr"].parent.name == case.id for case in datalist.training + datalist.validation)
        held += split.val
    assert sorted(held) == ["case_000", "case_001", "case_002"]


def test_a_datalist_into_case_folders_names_cases_by_folder_and_refuses_one_id_twice(task, tmp_path):
    from medsynth.data.layouts import read_datalist

    entries = [{"mr": str(task / c / "mr.mha"), "ct": str(task / c / "ct.mha")} for c in ("case_000", "case_001")]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps({"training": entries, "validation": [{"id": "third", **entries[0]}]}))
    datalist = read_datalist(listed, ("mr", "ct"))
    assert [c.id for c in datalist.training + datalist.validation] == ["case_000", "case_001", "third"]

    entries.append({"mr": str(task / "case_000" / "mr.mha"), "ct": str(task / "case_000" / "ct.mha")})
    listed.write_text(json.dumps({"training": entries}))
    config = tmp_path / "small.yaml"
    config.write_text(MODEL_YAML)
    line = _error_line(_run("train", "pix2pix", listed, "--out", tmp_path / "run", "--config", config, *TRAIN))
    assert "case_000" in line and line.count("mr.mha") == 2
    assert not (tmp_path / "run").exists()  # a refusal writes nothing, not even split.json
