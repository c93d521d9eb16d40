"""A batch survives any one case (any exception, GPU out of memory with a retry), a single unusable INPUT
is one error line, and ``--mask DIR`` reaches the intensity scaling of ``translate`` and ``attribute``.

Models are untrained networks saved with the metadata inference needs: enough to test the plumbing fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import medsynth.inference.predictor as predictor_module
from medsynth.cli import app
from medsynth.data.intensity import CTIntensity, MRIntensity
from medsynth.inference.volume import VolumeTranslator
from medsynth.io.image import ImageMeta, read_image, write_image
from medsynth.modelfile import NetworkSpec, save_model
from medsynth.nets.generators import UNetGenerator
from medsynth.phantom.anatomy import make_head
from medsynth.services.batch import BatchCase, BatchReport, CaseStatus

SPACING = 6.0
SHAPE = (16, 16, 16)  # on the model grid already (6 mm, RAS): the grid steps are the identity
KWARGS = {"spatial_dims": 3, "channels": [4, 8], "strides": [2]}
COMMON = {"spatial_dims": 3, "patch_size": [8, 8, 8], "spacing": [SPACING] * 3, "orientation": "RAS",
          "flip_axes": [0]}
runner = CliRunner()


def _network(tanh: bool) -> tuple[NetworkSpec, torch.nn.Module]:
    torch.manual_seed(0)
    kwargs = {**KWARGS, "tanh_output": tanh}
    return NetworkSpec("medsynth.UNetGenerator", kwargs), UNetGenerator(**kwargs)


@pytest.fixture(scope="module")
def pix2pix(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pix2pix") / "run"
    run.mkdir()
    directions = {"mr2ct": {"network": "G", "source": MRIntensity().to_json(), "target": CTIntensity().to_json()}}
    save_model(run / "model.safetensors", "pix2pix", {"G": _network(True)},
               {**COMMON, "directions": directions, "mc_dropout": False})
    return run


@pytest.fixture(scope="module")
def vagan(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vagan") / "run"
    run.mkdir()
    save_model(run / "model.safetensors", "vagan", {"M": _network(False)},
               {**COMMON, "map_network": "M", "intensity": MRIntensity().to_json(), "intensity_region": "image"})
    return run


META = ImageMeta.from_affine(np.diag([SPACING] * 3 + [1.0]), SHAPE)


def _mr(folder: Path, cases: dict[str, int], offset: float = 0.0) -> Path:
    for name, seed in cases.items():
        write_image(folder / f"{name}.nii.gz", make_head(seed, SHAPE, 14.0).mr + offset, META)
    return folder


def _box_masks(folder: Path, cases: list[str]) -> Path:
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:12, 4:12, 4:12] = 1
    for name in cases:
        write_image(folder / f"{name}.nii.gz", mask, META, np.uint8)
    return folder


def _run(command: str, *args: object):
    return runner.invoke(app, [command, *(str(a) for a in args), "--device", "cpu"])


def _statuses(out: Path, command: str = "translate") -> dict[str, str]:
    document = json.loads((out / f"{command}_report.json").read_text())
    return {case["case"]: case["status"] for case in document["cases"]}


def _values(path: Path) -> np.ndarray:
    return read_image(path, check_values=False).array


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- 7. one case never stops a batch ----------------------------------------------------------------
def test_any_exception_fails_only_its_case_with_the_reason(pix2pix, tmp_path, monkeypatch):
    inputs = _mr(tmp_path / "in", {"a": 1, "b": 2, "c": 3})
    real_run = VolumeTranslator.run

    def run(self, prepared, *args, **kwargs):
        if prepared.volume.path.name.startswith("b"):
            raise ValueError("something deep inside went wrong\nsecond line")
        return real_run(self, prepared, *args, **kwargs)

    monkeypatch.setattr(VolumeTranslator, "run", run)
    result = _run("translate", pix2pix, inputs, tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert _statuses(tmp_path / "out") == {"a": "written", "b": "failed", "c": "written"}
    report = json.loads((tmp_path / "out" / "translate_report.json").read_text())
    assert report["written"] == 2 and report["failed"] == 1
    reason = next(c["reason"] for c in report["cases"] if c["case"] == "b")
    assert reason == "ValueError: something deep inside went wrong"


def test_gpu_out_of_memory_is_retried_with_one_window_at_a_time_and_cpu_blending(pix2pix, tmp_path, monkeypatch):
    inputs = _mr(tmp_path / "in", {"a": 1, "b": 2})
    assert _run("translate", pix2pix, inputs, tmp_path / "plain").exit_code == 0
    real = predictor_module.sliding_window_inference
    calls: list[tuple[int, str]] = []

    def short_of_memory(*args, **kwargs):
        calls.append((kwargs["sw_batch_size"], str(kwargs["device"])))
        if kwargs["sw_batch_size"] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "sliding_window_inference", short_of_memory)
    result = _run("translate", pix2pix, inputs, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert calls == [(4, "cpu"), (1, "cpu")] * 2  # each case: the failed try, then the reduced retry
    for case in ("a", "b"):
        np.testing.assert_allclose(_values(tmp_path / "out" / f"{case}.nii.gz"),
                                   _values(tmp_path / "plain" / f"{case}.nii.gz"), atol=1.0)


def test_out_of_memory_even_when_reduced_fails_that_case_and_the_batch_goes_on(pix2pix, tmp_path, monkeypatch):
    inputs = _mr(tmp_path / "in", {"a": 1, "big": 2})
    real_run = VolumeTranslator.run
    tries: list[str] = []

    def run(self, prepared, *args, **kwargs):
        if prepared.volume.path.name.startswith("big"):
            tries.append("big")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return real_run(self, prepared, *args, **kwargs)

    monkeypatch.setattr(VolumeTranslator, "run", run)
    result = _run("translate", pix2pix, inputs, tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert tries == ["big", "big"]  # tried, then retried reduced, then given up
    assert _statuses(tmp_path / "out") == {"a": "written", "big": "failed"}
    report = json.loads((tmp_path / "out" / "translate_report.json").read_text())
    assert "GPU out of memory" in next(c["reason"] for c in report["cases"] if c["case"] == "big")


def test_report_counts_statuses_given_as_members_or_strings():
    report = BatchReport([BatchCase("a", CaseStatus.WRITTEN), BatchCase("b", CaseStatus.FAILED),
                          BatchCase("c", CaseStatus.WRITTEN)])
    assert report.count(CaseStatus.WRITTEN) == report.count("written") == 2
    assert report.count("failed") == 1 and report.count("skipped") == 0
    assert [r.case for r in report.failures] == ["b"]


# -- 8. a single unusable INPUT ---------------------------------------------------------------------
@pytest.mark.parametrize("command", ["translate", "attribute"])
@pytest.mark.parametrize("kind", ["truncated", "four_d", "constant"])
def test_a_single_unusable_input_file_is_exit_2_and_one_line(pix2pix, vagan, tmp_path, command, kind):
    path = tmp_path / "in" / f"{kind}.nii.gz"
    if kind == "truncated":
        _mr(tmp_path / "in", {kind: 1})
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "four_d":
        write_image(path, np.ones((*SHAPE, 2), np.float32), ImageMeta.from_affine(np.eye(4), (*SHAPE, 2)))
    else:
        write_image(path, np.full(SHAPE, 7.0, np.float32), META)
    model = pix2pix if command == "translate" else vagan
    line = _one_error_line(_run(command, model, path, tmp_path / "out"))
    assert line.startswith("error:") and str(path) in line


# -- 5. --mask DIR -----------------------------------------------------------------------------------
def test_translate_with_masks_is_the_same_for_an_mr_with_an_offset(pix2pix, tmp_path):
    """With the body given, the MR scale comes from its voxels only: mr and mr − 1500 agree."""
    cases = {"a": 1, "b": 2}
    masks = _box_masks(tmp_path / "masks", list(cases))
    plain = _mr(tmp_path / "plain", cases)
    shifted = _mr(tmp_path / "shifted", cases, offset=-1500.0)
    for inputs in (plain, shifted):
        result = _run("translate", pix2pix, inputs, tmp_path / f"out_{inputs.name}", "--mask", masks)
        assert result.exit_code == 0, result.output
    for case in cases:
        a = _values(tmp_path / "out_plain" / f"{case}.nii.gz")
        b = _values(tmp_path / "out_shifted" / f"{case}.nii.gz")
        assert np.abs(a - b).max() <= 2.0


def test_translate_mask_sets_the_scaling_region(pix2pix, tmp_path):
    """The whole image as mask scales on every voxel; a box scales on the box: different inputs, outputs."""
    inputs = _mr(tmp_path / "in", {"a": 1})
    everything = tmp_path / "everything"
    write_image(everything / "a.nii.gz", np.ones(SHAPE, np.uint8), META, np.uint8)
    box = _box_masks(tmp_path / "box", ["a"])
    outputs = {}
    for name, masks in (("everything", everything), ("box", box)):
        assert _run("translate", pix2pix, inputs, tmp_path / f"out_{name}", "--mask", masks).exit_code == 0
        outputs[name] = _values(tmp_path / f"out_{name}" / "a.nii.gz")
    assert np.abs(outputs["everything"] - outputs["box"]).max() > 10.0


def test_a_missing_or_misfit_mask_fails_its_case(pix2pix, tmp_path):
    inputs = _mr(tmp_path / "in", {"a": 1, "b": 2, "c": 3})
    masks = _box_masks(tmp_path / "masks", ["a"])
    write_image(masks / "c.nii.gz", np.ones((8, 8, 8), np.uint8), ImageMeta.from_affine(np.eye(4), (8, 8, 8)),
                np.uint8)
    result = _run("translate", pix2pix, inputs, tmp_path / "out", "--mask", masks)
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "out" / "translate_report.json").read_text())
    reasons = {c["case"]: c["reason"] for c in report["cases"]}
    assert _statuses(tmp_path / "out") == {"a": "written", "b": "failed", "c": "failed"}
    assert "no mask for case 'b'" in reasons["b"] and "shape" in reasons["c"]
    line = _one_error_line(_run("translate", pix2pix, inputs / "b.nii.gz", tmp_path / "single", "--mask", masks))
    assert "no mask for case 'b'" in line
    assert "folder of masks" in _one_error_line(_run("translate", pix2pix, inputs, tmp_path / "x", "--mask",
                                                     masks / "a.nii.gz"))


def test_attribute_mask_sets_the_scaling_region(vagan, tmp_path):
    inputs = _mr(tmp_path / "in", {"a": 1})
    everything = tmp_path / "everything"
    write_image(everything / "a.nii.gz", np.ones(SHAPE, np.uint8), META, np.uint8)
    box = _box_masks(tmp_path / "box", ["a"])
    maps = {}
    for name, masks in (("none", None), ("everything", everything), ("box", box)):
        extra = [] if masks is None else ["--mask", masks]
        assert _run("attribute", vagan, inputs, tmp_path / f"out_{name}", *extra).exit_code == 0
        maps[name] = _values(tmp_path / f"out_{name}" / "a_map.nii.gz")
    np.testing.assert_allclose(maps["everything"], maps["none"], atol=1e-4)  # this model scales on the image
    assert np.abs(maps["box"] - maps["none"]).max() > 1e-3


# -- a killed batch's temporaries ------------------------------------------------------------------------
def test_rerun_removes_its_cases_temporaries_but_not_another_shards(pix2pix, tmp_path):
    inputs = _mr(tmp_path / "in", {"a": 1, "b": 2})
    out = tmp_path / "out"
    out.mkdir()
    # What SIGKILL during a write leaves: a hidden temporary beside each case's output.
    left = {case: out / f".{case}.nii.gz.1234abcd.partial.nii.gz" for case in ("a", "b")}
    for path in left.values():
        path.write_bytes(b"half")
    mine = _run("translate", pix2pix, inputs, out, "--shard", "0/2")  # case a; b is the other shard's
    assert mine.exit_code == 0, mine.output
    assert not left["a"].exists() and left["b"].exists()  # b's may be a running shard's write in progress
    assert _run("translate", pix2pix, inputs, out, "--shard", "1/2").exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
