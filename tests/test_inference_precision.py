"""``translate --cpu-bf16``: bf16 autocast on the CPU is asked for, never chosen; its sCT stays within a
stated tolerance of float32's, the report says which arithmetic made it, and the option is refused
(one line, before torch loads) where it cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny import one_error_line, run_cli, tiny_run

from medsynth.choices import Direction, Engine
from medsynth.errors import UsageError
from medsynth.phantom.anatomy import make_head


@pytest.fixture(scope="module")
def translated(tmp_path_factory, paired_phantom, write_volume) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("precision")
    run = tiny_run(paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0), root / "run")
    mr = root / "mr"
    for seed in (5, 6):
        write_volume(mr / f"head{seed}.nii.gz", make_head(seed, (20, 22, 18), 7.0).mr, np.diag([7.0, 7.0, 7.0, 1.0]))
    outputs = {}
    for name, extra in (("float32", []), ("bfloat16", ["--cpu-bf16"])):
        result = run_cli("translate", run, mr, root / name, "--device", "cpu", *extra)
        assert result.exit_code == 0, result.output
        outputs[name] = root / name
    return outputs


def test_bf16_sct_within_tolerance_of_float32(translated: dict[str, Path]) -> None:
    """Per case: mean |bf16 − fp32| ≤ 4 HU over the head and ≤ 40 HU anywhere (bf16 keeps 8 significant bits
    of a tanh output spanning 4,000 HU: ~8 HU per rounding), yet not identical — the autocast did run."""
    for path in sorted(translated["float32"].glob("*.nii.gz")):
        fp32 = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        bf16 = np.asarray(nib.load(translated["bfloat16"] / path.name).dataobj, dtype=np.float64)
        difference = np.abs(bf16 - fp32)
        head = fp32 > -500
        assert head.sum() > 100
        assert difference[head].mean() <= 4.0
        assert difference.max() <= 40.0
        assert difference.max() > 0


def test_report_names_each_written_cases_precision(translated: dict[str, Path], tmp_path: Path) -> None:
    for name, folder in translated.items():
        report = json.loads((folder / "translate_report.json").read_text())
        assert report["written"] == 2 and [case["precision"] for case in report["cases"]] == [name, name]
    # A re-run in the other precision skips the cases an earlier run wrote: they say no precision of this run.
    run = translated["float32"].parent / "run"
    again = run_cli("translate", run, translated["float32"].parent / "mr", translated["float32"], "--device", "cpu",
                    "--cpu-bf16")
    assert again.exit_code == 0, again.output
    report = json.loads((translated["float32"] / "translate_report.json").read_text())
    assert [(c["status"], c["precision"]) for c in report["cases"]] == [("skipped", "")] * 2


def test_cpu_bf16_refused_with_onnxruntime(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "mr").mkdir()
    line = one_error_line(run_cli("translate", tmp_path / "model.onnx", tmp_path / "mr", tmp_path / "out",
                                  "--engine", "onnxruntime", "--cpu-bf16"))
    assert "--cpu-bf16" in line and "onnxruntime" in line
    assert not (tmp_path / "out").exists()


def test_options_given_as_plain_strings_act_as_their_enums(translated: dict[str, Path], tmp_path: Path) -> None:
    """A library caller's ``engine="torch"`` is Engine.TORCH: it once compared unequal by identity and ran
    float32 without a word although bf16 was asked for (and no AMP on CUDA)."""
    from medsynth.services.translate import TranslateOptions, translate

    run = translated["float32"].parent / "run"
    options = TranslateOptions(engine="torch", direction="mr2ct", cpu_bf16=True, device="cpu")
    assert options.engine is Engine.TORCH and options.direction is Direction.MR2CT
    report = translate(run, translated["float32"].parent / "mr", tmp_path / "out", options)
    assert {case.precision for case in report.results} == {"bfloat16"}
    for path in sorted((tmp_path / "out").glob("*.nii.gz")):
        assert np.array_equal(nib.load(path).get_fdata(), nib.load(translated["bfloat16"] / path.name).get_fdata())
    with pytest.raises(UsageError, match="--engine tensorrt: use one of torch, onnxruntime"):
        TranslateOptions(engine="tensorrt")


@pytest.mark.parametrize("dims", [2, 3])
def test_inference_layout_is_channels_last_for_2d_on_the_cpu_and_changes_no_output(dims: int) -> None:
    """2D networks run channels-last on the CPU (1.4x, docs/performance.md), 3D ones stay as they are; the
    output is the same function of the input (float32 sums in another order: within 1e-5)."""
    import torch

    from medsynth.inference.predictor import GridPredictor, inference_layout
    from medsynth.nets.registry import build_network

    torch.manual_seed(0)
    kwargs = {"spatial_dims": dims, "in_channels": 1, "out_channels": 1, "channels": [4, 8], "strides": [2],
              "num_res_units": 1, "dropout": 0.0, "tanh_output": True, "norm": "batch"}
    network = build_network("medsynth.UNetGenerator", kwargs).eval()
    image = torch.rand(1, 1, 24, 20, 6) * 2 - 1
    predictor = GridPredictor(dims, (16,) * dims, window_divisor=2)
    before = predictor(network, image)
    assert inference_layout(network) is network
    # Weights with one input channel count as both layouts: only the others tell.
    weights = [m.weight for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
               and m.weight.shape[1] > 1]
    assert weights
    for weight in weights:
        assert weight.is_contiguous(memory_format=torch.channels_last) is (dims == 2)
    assert torch.allclose(predictor(network, image), before, atol=1e-5)
