"""2D images — (H, W), (H, W, 1), (H, W, 1, 1) — for 2D models, in training and inference: VA-GAN learns its
map from a folder of 2D NIfTI images and attributes them; a 2D pix2pix trains on 2D slices and translates one."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

SIDE, SPACING = 16, 3.0
EFFECT = -250.0
VAGAN_MODEL = {"dims": 2, "channels": [8, 16, 32], "critic_channels": [8, 16, 32], "critic_steps": 2,
               "critic_steps_boost": 5, "boost_first": 5, "boost_every": 0, "flip_axes": [], "val_cases": 2,
               "lr": 1e-3, "lambda_map": 30.0}
FORMS = ((SIDE, SIDE), (SIDE, SIDE, 1), (SIDE, SIDE, 1, 1))  # the shapes a 2D image is stored in


def _save(path: Path, image: np.ndarray, form: tuple[int, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.reshape(form).astype(np.float32), np.diag([SPACING, SPACING, 5.0, 1.0])), path)


def _write_attribution_slices(root: Path, cases: int = 16) -> Path:
    """A disc with noise; patients (the second half) have a darkened box; every image 2D, in turn in each form."""
    x, y = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    disc = (x - 7.5) ** 2 + (y - 7.5) ** 2 < 36
    for i in range(cases):
        rng = np.random.default_rng(i)
        effect = np.zeros((SIDE, SIDE))
        if i >= cases // 2:
            cx, cy = 6 + rng.integers(0, 2), 6 + rng.integers(0, 2)
            effect[cx:cx + 4, cy:cy + 3] = EFFECT
            _save(root / "effect" / f"case_{i:02d}.nii.gz", effect, FORMS[i % 3])
        image = 50.0 + 400.0 * disc + 20.0 * rng.standard_normal((SIDE, SIDE)) + effect
        _save(root / ("control" if i < cases // 2 else "patient") / f"case_{i:02d}.nii.gz", image, FORMS[i % 2])
    return root


@pytest.mark.slow
def test_vagan_learns_from_2d_images_and_attributes_them(tmp_path):
    data = _write_attribution_slices(tmp_path / "data")
    torch.manual_seed(0)
    train("vagan", data, tmp_path / "run", {"steps": 200, "batch_size": 8, "val_every": 0, "ckpt_every": 1000,
                                            "preview_every": 1000, "device": "cpu"}, VAGAN_MODEL)
    result = CliRunner().invoke(app, ["attribute", str(tmp_path / "run"), str(data / "patient"), str(tmp_path / "out"),
                                      "--effect", str(data / "effect"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for source in sorted((data / "patient").iterdir()):
        case = source.name.removesuffix(".nii.gz")
        written = nib.load(tmp_path / "out" / f"{case}_map.nii.gz")
        assert written.shape == nib.load(source).shape  # a 2D image gives a 2D map, stored as the input is
        np.testing.assert_allclose(written.affine, nib.load(source).affine)
    ncc = json.loads((tmp_path / "out" / "attribute_report.json").read_text())["ncc"]["cases"]
    assert min(ncc["case_14"], ncc["case_15"]) > 0.4, ncc  # held-out patients: the map finds the box


def _write_paired_slices(root: Path, heads: int = 3) -> Path:
    """Axial slices of phantom heads as 2D images, mr/<case>.nii.gz and ct/<case>.nii.gz."""
    for index in range(heads):
        head = make_head(index, (24, 28, 12), 6.0)
        for z in (4, 6, 8):
            for modality in ("mr", "ct"):
                _save(root / modality / f"h{index}_z{z}.nii.gz", getattr(head, modality)[:, :, z], (24, 28))
    return root


@pytest.mark.parametrize("form", [(24, 28), (24, 28, 1), (24, 28, 1, 1)])
def test_a_2d_pix2pix_trained_on_2d_slices_translates_one_slice(tmp_path, form):
    data = _write_paired_slices(tmp_path / "data")
    train("pix2pix", data, tmp_path / "run", {"steps": 2, "batch_size": 2, "val_every": 0, "ckpt_every": 100,
                                              "preview_every": 100, "device": "cpu"},
          {"dims": 2, "patch_size": [16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2})
    mr = make_head(7, (24, 28, 12), 6.0).mr[:, :, 6]
    affine = np.array([[6.0, 0, 0, -70.0], [0, 6.0, 0, -80.0], [0, 0, 6.0, 12.5], [0, 0, 0, 1.0]])
    source = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(mr.reshape(form).astype(np.float32), affine), source)
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "run"), str(source), str(tmp_path / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "out" / "slice.nii.gz")
    assert written.shape == form and written.get_data_dtype() == np.int16
    np.testing.assert_allclose(written.affine, affine)
    assert np.ptp(np.asarray(written.dataobj)) > 0  # a translated slice, not a constant


def test_a_2d_cyclegan_trains_on_2d_slices_and_translates_one_back(tmp_path):
    data = _write_paired_slices(tmp_path / "data")
    train("cyclegan", data, tmp_path / "run", {"steps": 2, "batch_size": 2, "val_every": 0, "ckpt_every": 100,
                                               "preview_every": 100, "device": "cpu"},
          {"dims": 2, "patch_size": [16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2,
           "seg_channels": [8, 16], "shape_weight": 0.0, "seg_pretrain_steps": 0})
    ct = tmp_path / "ct_slice.nii.gz"
    _save(ct, make_head(7, (24, 28, 12), 6.0).ct[:, :, 6], (24, 28, 1))
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "run"), str(ct), str(tmp_path / "out"),
                                      "--direction", "ct2mr", "--format", "mha", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    from medsynth.io import read_image

    written = read_image(tmp_path / "out" / "ct_slice.mha", ndim=2)
    assert written.array.shape == (24, 28)
    np.testing.assert_allclose(written.meta.affine, np.diag([SPACING, SPACING, 5.0, 1.0]), atol=1e-6)
