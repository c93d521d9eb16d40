"""2.5D pix2pix (``context_slices``: neighbouring slices as input channels): training slabs and inference
slabs are the same arrays, the model records k and translate applies it, and the option is refused where it
means nothing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.patches import PatchDraw, cut_patch, cut_slab
from medsynth.families.pix2pix import Pix2PixConfig
from medsynth.inference.predictor import slice_context
from medsynth.modelfile import load_model


@pytest.mark.parametrize("k", [1, 2])
def test_training_slab_equals_inference_slab_at_every_slice_including_the_ends(k):
    volume = np.random.default_rng(0).random((2, 9, 11, 6)).astype(np.float32)  # two contrasts, 6 slices
    batch = slice_context(torch.from_numpy(volume), k).numpy()
    assert batch.shape == (6, 2 * (2 * k + 1), 9, 11)
    for z in range(6):
        assert np.array_equal(cut_slab(volume, PatchDraw((0, 0, z), ()), (9, 11), -1.0, k), batch[z])
    # contrast-major channels; beyond the ends the end slice repeats
    assert np.array_equal(batch[0, 0], volume[0, :, :, 0]) and np.array_equal(batch[0, k], volume[0, :, :, 0])
    assert np.array_equal(batch[5, 2 * k + 1 + 2 * k], volume[1, :, :, 5])
    assert np.array_equal(batch[3, k + 1], volume[0, :, :, 4])


def test_cut_slab_without_context_is_cut_patch():
    volume = np.random.default_rng(1).random((1, 8, 8, 5)).astype(np.float32)
    draw = PatchDraw((-2, 3, 2), (0,))
    assert np.array_equal(cut_slab(volume, draw, (8, 8), -1.0, 0), cut_patch(volume, draw, (8, 8), -1.0))


def test_context_slices_need_a_2d_model():
    from medsynth.errors import UsageError

    with pytest.raises(UsageError, match="context_slices"):
        Pix2PixConfig(dims=3, patch_size=(32, 32, 32), context_slices=1)
    with pytest.raises(UsageError, match="context_slices"):
        Pix2PixConfig(dims=2, patch_size=(32, 32), context_slices=-1)


def test_a_25d_model_trains_records_its_context_and_translates_on_the_input_grid(tmp_path, paired_phantom):
    data = paired_phantom(tmp_path / "data", cases=3, shape=(24, 24, 12))
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  dims: 2\n  context_slices: 2\n  patch_size: [24, 24]\n  channels: [8, 16, 32]\n"
                      "  disc_layers: 2\n  val_cases: 1\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "pix2pix", str(data), "--out", str(tmp_path / "run"), "--steps", "3",
                                 "--config", str(config), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.metadata["context_slices"] == 2
    assert model.networks["G"].kwargs["in_channels"] == 5  # one contrast at 5 slices
    result = runner.invoke(app, ["translate", str(tmp_path / "run"), str(data / "mr"), str(tmp_path / "sct"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for mr in sorted((data / "mr").glob("*.nii.gz")):
        source, sct = nib.load(mr), nib.load(tmp_path / "sct" / mr.name)
        assert sct.shape == source.shape and np.allclose(sct.affine, source.affine)
        assert sct.get_data_dtype() == np.int16
    report = json.loads((tmp_path / "sct" / "translate_report.json").read_text())
    assert all(row["status"] == "written" for row in report["cases"])
