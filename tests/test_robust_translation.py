"""vox2vox outputs that hold on a new patient: the same MR gives the same synthetic CT wherever the sliding
windows fall, whatever offset, gamma or field of view the MR comes with. Each property runs the real CLI
on files; the model is trained once, with the defaults (batch norm, histogram-standardised MR)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.modelfile import load_model
from medsynth.phantom.anatomy import make_head
from medsynth.training import train

pytestmark = pytest.mark.slow  # trains one small model for 300 steps

PATCH = 16
SPACING = 5.0
TRAIN = {"steps": 300, "batch_size": 2, "val_every": 0, "ckpt_every": 1000, "preview_every": 1000, "device": "cpu"}
MODEL = {"patch_size": [PATCH] * 3, "channels": [8, 16, 32], "disc_channels": 8, "disc_layers": 2,
         "lr": 1e-3, "lr_d": 2.5e-4}


@pytest.fixture(scope="module")
def model(tmp_path_factory, paired_phantom) -> Path:
    root = tmp_path_factory.mktemp("robust")
    data = paired_phantom(root / "data", cases=4, shape=(40, 48, 40), spacing=SPACING)
    train("pix2pix", data, root / "run", TRAIN, MODEL)
    return root / "run"


@pytest.fixture(scope="module")
def head():
    return make_head((1, 0), (40, 48, 40), SPACING)


def _translate(model: Path, folder: Path, out: Path) -> Path:
    result = CliRunner().invoke(app, ["translate", str(model), str(folder), str(out), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def _sct(model: Path, root: Path, name: str, array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The synthetic CT (HU) of ``array`` written as a NIfTI with ``affine``."""
    (root / name).mkdir(parents=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(root / name / "case.nii.gz"))
    out = _translate(model, root / name, root / f"{name}_sct")
    return np.asarray(nib.load(str(out / "case.nii.gz")).dataobj, dtype=np.float32)


def test_new_models_record_their_window_invariant_norm(model) -> None:
    document = load_model(model)
    assert document.metadata["generator_norm"] == "batch"
    assert document.networks["G"].kwargs["norm"] == "batch"
    assert document.metadata["directions"]["mr2ct"]["source"]["scaling"] == "histogram"


def _with_margin(head, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """The head's MR with background voxels added before and after it on every axis, and its affine."""
    padded = np.pad(head.mr, [(before, after)] * 3, constant_values=float(head.mr.min()))
    moved = head.affine.copy()
    moved[:3, 3] -= moved[:3, :3] @ np.full(3, before)
    return padded, moved


def test_shifting_the_window_grid_by_half_a_window_keeps_the_synthetic_ct(tmp_path, model, head) -> None:
    """Background moved from after the head to before it shifts every window by half a window relative to
    the anatomy (the field of view keeps its size; the head keeps a background margin on every side)."""
    shift = PATCH // 2
    margin = PATCH
    plain = _sct(model, tmp_path, "plain", *_with_margin(head, margin, margin + shift))
    shifted = _sct(model, tmp_path, "shifted", *_with_margin(head, margin + shift, margin))
    inner = (slice(margin, margin + head.mr.shape[0]), slice(margin, margin + head.mr.shape[1]),
             slice(margin, margin + head.mr.shape[2]))
    shifted_inner = tuple(slice(s.start + shift, s.stop + shift) for s in inner)
    body = head.mask.astype(bool)
    assert np.abs(plain[inner] - shifted[shifted_inner])[body].mean() < 3.0


@pytest.mark.parametrize("offset", [-1500.0, -5000.0])
def test_an_mr_stored_with_an_offset_gives_the_same_synthetic_ct(tmp_path, model, head, offset) -> None:
    plain = _sct(model, tmp_path, "plain", head.mr, head.affine)
    offset_sct = _sct(model, tmp_path, "offset", head.mr + offset, head.affine)
    assert np.abs(plain - offset_sct).max() <= 3.0


@pytest.mark.parametrize("scale", [1e19, 1e-12])
def test_an_mr_stored_at_an_extreme_scale_gives_the_same_synthetic_ct_without_warnings(tmp_path, model, head,
                                                                                       scale) -> None:
    """Every step of the MR's path is scale-free (Otsu, percentiles, landmarks); none may overflow on the way."""
    import warnings

    plain = _sct(model, tmp_path, "plain", head.mr, head.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail the case
        scaled = _sct(model, tmp_path, "scaled", head.mr * scale, head.affine)
    assert np.abs(plain - scaled).max() <= 1.0


def test_a_gamma_change_of_the_mr_gives_nearly_the_same_synthetic_ct(tmp_path, model, head) -> None:
    """A contrast change a scanner or sequence makes: intensity ** 1.5 (monotone, not linear)."""
    body = head.mask.astype(bool)
    scaled = head.mr / float(head.mr.max())
    plain = _sct(model, tmp_path, "plain", scaled, head.affine)
    gamma = _sct(model, tmp_path, "gamma", scaled ** 1.5, head.affine)
    assert np.abs(plain - gamma)[body].mean() < 10.0


def test_half_the_field_of_view_gives_nearly_the_same_synthetic_ct(tmp_path, model, head) -> None:
    """The upper half of the head alone (its tissue mix and background differ) on the same grid.

    Part of the difference is real: voxels near the cut lose the context below it (about 10 HU on average
    with the normalisation held fixed); the rest is the tissue-anchored MR scaling moving with the tissue
    mix (per-volume percentile scaling moves about twice as much)."""
    half = head.mr.shape[2] // 2
    body = head.mask.astype(bool)[:, :, half:]
    moved = head.affine.copy()
    moved[:3, 3] += moved[:3, :3] @ np.array([0, 0, half])
    whole = _sct(model, tmp_path, "whole", head.mr, head.affine)[:, :, half:]
    upper = _sct(model, tmp_path, "upper", head.mr[:, :, half:], moved)
    assert np.abs(whole - upper)[body].mean() < 45.0
