"""``medsynth export`` and ``translate --engine onnxruntime``: every family's inference network as a checked
ONNX graph with dynamic spatial axes and the model's metadata, computing what PyTorch computes, and the whole
translation pipeline on the graph giving torch's synthetic CT within 1 HU."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.modelfile import NetworkSpec, load_model, save_model
from medsynth.nets.registry import build_network
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TRAIN = {"steps": 3, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}
CT = {"modality": "ct", "window": [-1024.0, 3071.0]}
MR = {"modality": "mr", "scaling": "percentile", "percentiles": [0.5, 99.5], "output_scale": 1000.0}


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line and line.count("\n") == 0, result.stderr
    return line


def _unet(dims: int, dropout: float = 0.0, tanh: bool = True) -> tuple[NetworkSpec, torch.nn.Module]:
    kwargs = {"spatial_dims": dims, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16], "strides": [2, 2],
              "num_res_units": 1, "head_channels": 4, "dropout": dropout, "tanh_output": tanh}
    return NetworkSpec("medsynth.UNetGenerator", kwargs), build_network("medsynth.UNetGenerator", kwargs)


def _family_models(root: Path) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """A model file of every family: family -> (file, exported network's input kind, an input shape that is
    not the training patch)."""
    grid = {"spacing": [2.0, 2.0, 2.0], "orientation": "RAS", "flip_axes": [0]}
    models = {}
    models["pix2pix"] = save_model(root / "pix2pix.safetensors", "pix2pix", {"G": _unet(3, dropout=0.2)}, {
        **grid, "spatial_dims": 3, "patch_size": [16, 16, 16], "mc_dropout": True,
        "directions": {"mr2ct": {"network": "G", "source": MR, "target": CT}}}), (1, 1, 24, 16, 32)
    models["cyclegan"] = save_model(root / "cyclegan.safetensors", "cyclegan",
                                    {"G_mr2ct": _unet(2), "G_ct2mr": _unet(2)}, {
        **grid, "spatial_dims": 2, "patch_size": [16, 16], "mc_dropout": False,
        "directions": {"mr2ct": {"network": "G_mr2ct", "source": MR, "target": CT},
                       "ct2mr": {"network": "G_ct2mr", "source": CT, "target": MR}}}), (3, 1, 32, 24)
    models["vagan"] = save_model(root / "vagan.safetensors", "vagan", {"M": _unet(2, tanh=False)}, {
        **grid, "spatial_dims": 2, "patch_size": [16, 16], "map_network": "M", "intensity": MR}), (2, 1, 16, 40)
    fastgan = {"resolution": 64, "nz": 16, "ngf": 4}
    models["fastgan"] = save_model(root / "fastgan.safetensors", "fastgan", {"G": (
        NetworkSpec("medsynth.FastGANGenerator", fastgan), build_network("medsynth.FastGANGenerator", fastgan))},
        {"spatial_dims": 2, "spacing": [1.0, 1.0], "resolution": 64, "intensity": CT}), (5, 16)
    return models


@pytest.mark.parametrize("family,direction", [("pix2pix", "mr2ct"), ("cyclegan", "mr2ct"), ("cyclegan", "ct2mr"),
                                              ("vagan", "mr2ct"), ("fastgan", "mr2ct")])
def test_every_family_exports_a_checked_graph_computing_what_torch_computes(tmp_path, family, direction):
    path, shape = _family_models(tmp_path)[family]
    out = tmp_path / f"{family}.onnx"
    result = CliRunner().invoke(app, ["export", str(path), str(out), "--direction", direction])
    assert result.exit_code == 0, (result.output, result.exception)

    graph = onnx.load(str(out))
    onnx.checker.check_model(graph, full_check=True)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    metadata = json.loads({p.key: p.value for p in graph.metadata_props}["medsynth"])
    model = load_model(path)
    assert metadata["family"] == family and metadata["spacing"] == model.metadata["spacing"]
    name = metadata["onnx"]["network"]
    assert name == {"pix2pix": "G", "cyclegan": f"G_{direction}", "vagan": "M", "fastgan": "G"}[family]
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param  # batch is dynamic; so is every spatial axis of an image network
    assert all(d.dim_param for d in dims[2:]) and len(dims) == len(shape)

    x = torch.randn(*shape)
    expected = model.build(name).eval()(x).detach().numpy()  # eval: dropout off, as in the graph
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)


def test_export_refuses_what_it_cannot_do_in_one_line(tmp_path):
    path, _ = _family_models(tmp_path)["pix2pix"]
    runner = CliRunner()
    assert "*.onnx" in _one_error_line(runner.invoke(app, ["export", str(path), str(tmp_path / "g.pt")]))
    assert "ct2mr" in _one_error_line(runner.invoke(app, ["export", str(path), str(tmp_path / "g.onnx"),
                                                          "--direction", "ct2mr"]))
    (tmp_path / "taken.onnx").write_bytes(b"x")
    assert "--overwrite" in _one_error_line(runner.invoke(app, ["export", str(path), str(tmp_path / "taken.onnx")]))
    assert (tmp_path / "taken.onnx").read_bytes() == b"x"
    missing = runner.invoke(app, ["export", str(tmp_path / "none"), str(tmp_path / "a.onnx")])
    assert "none' does not exist" in _one_error_line(missing)


# ---------------------------------------------------------------------------------- the whole pipeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory, paired_phantom) -> Path:
    root = tmp_path_factory.mktemp("onnx")
    data = paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    train("pix2pix", data, root / "run", TRAIN, MODEL)
    return root / "run"


def _translate(*args: object):
    result = CliRunner().invoke(app, ["translate", *(str(a) for a in args), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_onnxruntime_synthetic_ct_equals_torchs_within_one_hu_everywhere(tmp_path, trained, write_volume,
                                                                         oblique_affine):
    inputs = tmp_path / "mr"
    for case, seed in (("a", 5), ("b", 6)):  # oblique grids, sizes that need several windows
        write_volume(inputs / f"{case}.nii.gz", make_head(seed, (22, 18, 15), 5.0).mr,
                     oblique_affine(spacing=(5.0, 5.5, 6.0)))
    graph = tmp_path / "model.onnx"
    assert CliRunner().invoke(app, ["export", str(trained), str(graph)]).exit_code == 0
    for extra in ([], ["--tta"]):
        tag = "tta" if extra else "plain"
        _translate(trained, inputs, tmp_path / f"torch_{tag}", *extra)
        _translate(graph, inputs, tmp_path / f"graph_{tag}", "--engine", "onnxruntime", *extra)
        _translate(trained, inputs, tmp_path / f"run_{tag}", "--engine", "onnxruntime", "--sw-batch-size", "1",
                   "--workers", "2", *extra)
        for case in ("a", "b"):
            reference = nib.load(tmp_path / f"torch_{tag}" / f"{case}.nii.gz")
            for engine in ("graph", "run"):
                image = nib.load(tmp_path / f"{engine}_{tag}" / f"{case}.nii.gz")
                assert image.get_data_dtype() == np.int16 and image.shape == reference.shape
                np.testing.assert_array_equal(image.affine, reference.affine)
                difference = np.abs(np.asarray(image.dataobj, np.int32) - np.asarray(reference.dataobj, np.int32))
                assert difference.max() <= 1, (engine, tag, case, difference.max())
                assert np.ptp(np.asarray(image.dataobj)) > 100  # a real image, not a constant


def test_onnx_engine_mismatches_are_one_error_line(tmp_path, trained, write_volume):
    write_volume(tmp_path / "mr" / "a.nii.gz", make_head(1, (14, 16, 12), 7.0).mr, np.diag([7.0, 7.0, 7.0, 1.0]))
    graph = tmp_path / "model.onnx"
    assert CliRunner().invoke(app, ["export", str(trained), str(graph)]).exit_code == 0
    runner = CliRunner()
    line = _one_error_line(runner.invoke(app, ["translate", str(graph), str(tmp_path / "mr"), str(tmp_path / "o"),
                                               "--device", "cpu"]))
    assert "--engine onnxruntime" in line
    line = _one_error_line(runner.invoke(app, ["translate", str(graph), str(tmp_path / "mr"), str(tmp_path / "o"),
                                               "--engine", "onnxruntime", "--uncertainty", "3", "--device", "cpu"]))
    assert "deterministic" in line
    line = _one_error_line(runner.invoke(app, ["translate", str(graph), str(tmp_path / "mr"), str(tmp_path / "o"),
                                               "--engine", "onnxruntime", "--direction", "ct2mr"]))
    assert "ct2mr" in line
    assert not (tmp_path / "o").exists()
