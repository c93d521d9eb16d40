"""Anatomy-aware paired training: tissue classes from the reference CT's HU, a tissue head that learns them,
and supervised regression without a discriminator (``gan_weight: 0``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.tissue import TISSUE_EDGES_HU, TISSUE_NAMES, tissue_labels, tissue_labels_torch
from medsynth.engine.config import TrainConfig
from medsynth.engine.runtime import make_runtime
from medsynth.engine.trainer import Trainer
from medsynth.errors import UsageError
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig
from medsynth.modelfile import load_model
from medsynth.phantom.kinds import write_phantom

SMALL_2D = {"dims": 2, "patch_size": [32, 32], "channels": [8, 16, 32], "num_res_units": 1, "disc_channels": 8,
            "disc_layers": 2, "lr": 3e-3, "augment": 0.0, "val_cases": 0, "min_spacing": 0.5}


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paired") / "data"
    write_phantom("paired", out, cases=2, shape=(32, 40, 16), spacing=5.0, seed=3)
    return out


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny bodies with every tissue class (fat rim, soft tissue, a lung and a bone), whose MR shows the
    classes plainly (MR = CT + 1100, noise aside): what a tissue head must learn is which HU band is which."""
    from medsynth.io import ImageMeta, write_ct, write_image

    out = tmp_path_factory.mktemp("layered") / "data"
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(32) - 15.5, np.arange(32) - 15.5, indexing="ij")
    for case in range(2):
        r = np.hypot(x / (13 - case), y / 11)
        ct = np.full((32, 32), -1000.0)
        ct[r < 1.0], ct[r < 0.85] = -100.0, 40.0
        ct[np.hypot(x + 5, y) < 3.5], ct[np.hypot(x - 5, y - case) < 3.0] = -750.0, 900.0
        ct = np.repeat(ct[..., None], 16, axis=2) + rng.normal(0, 10, (32, 32, 16))
        meta = ImageMeta.from_affine(np.diag([2.0, 2.0, 2.0, 1.0]), ct.shape)
        write_image(out / "mr" / f"case_{case}.nii.gz", (ct + 1100.0).clip(0).astype(np.float32), meta)
        write_ct(out / "ct" / f"case_{case}.nii.gz", ct, meta)
    return out


def test_classes_follow_the_documented_edges_in_hu_and_in_normalised_units():
    hu = np.array([-1024, -900, -899, -250, -249, -30, -29, 200, 201, 3071], dtype=np.float32)
    assert tissue_labels(hu).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(TISSUE_NAMES) == len(TISSUE_EDGES_HU) + 1
    from medsynth.data.intensity import CTIntensity

    ct = CTIntensity()
    edges = torch.from_numpy(ct.normalise(np.asarray(TISSUE_EDGES_HU)))
    values = np.random.default_rng(0).uniform(-1024, 3071, 2000).astype(np.float32)
    values = values[np.min(np.abs(values[:, None] - np.asarray(TISSUE_EDGES_HU)), axis=1) > 0.01]  # off the edges
    assert np.array_equal(tissue_labels_torch(torch.from_numpy(ct.normalise(values)), edges).numpy(),
                          tissue_labels(values))


def _fit(family: Pix2Pix, run: Path, steps: int) -> Trainer:
    config = TrainConfig(steps=steps, batch_size=4, val_every=0, ckpt_every=1000, preview_every=1000, log_every=1,
                         device="cpu")
    trainer = Trainer(family, config, run, make_runtime("cpu", False))
    trainer.fit()
    return trainer


def _tissue_accuracy(generator: torch.nn.Module, family: Pix2Pix) -> float:
    """Share of the body's voxels of the training cases whose tissue the head names right (whole slices)."""
    hits = total = 0
    for case in family.data.training:
        slices = np.moveaxis(case.mr[0], -1, 0)[:, None]  # (Z, 1, X, Y): 2D, no context slices
        with torch.no_grad():
            _, logits = generator(torch.from_numpy(np.ascontiguousarray(slices)), tissue=True)
        predicted = np.moveaxis(logits.argmax(1).numpy(), 0, -1)
        truth = tissue_labels(family.data.ct_intensity.denormalise(case.ct[0]))
        hits += int((predicted == truth)[case.mask].sum())
        total += int(case.mask.sum())
    return hits / total


def test_a_tissue_head_learns_the_classes_of_a_tiny_case_without_a_discriminator(layered, tmp_path):
    torch.manual_seed(0)
    family = Pix2Pix(Pix2PixConfig(**{**SMALL_2D, "lr": 1e-2}, gan_weight=0.0, tissue_weight=1.0,
                                   mr_scaling="percentile"), layered)
    assert set(family.networks) == {"G"} and set(family.optimizers()) == {"G"}  # regression: no D at all
    before = _tissue_accuracy(family.networks["G"].eval(), family)
    trainer = _fit(family, tmp_path / "run", 300)
    after = _tissue_accuracy(trainer.export_networks()["G"].eval(), family)
    majority = max(np.bincount(np.concatenate([tissue_labels(family.data.ct_intensity.denormalise(c.ct[0]))[c.mask]
                                                for c in family.data.training]), minlength=5)) / sum(
        int(c.mask.sum()) for c in family.data.training)
    assert after > 0.9 > max(before, majority), (before, after, majority)

    model = load_model(tmp_path / "run")
    assert set(model.networks) == {"G"} and model.metadata["tissue_weight"] == 1.0
    generator = model.build("G")
    image = generator(torch.zeros(1, 1, 32, 32))
    assert isinstance(image, torch.Tensor) and image.shape == (1, 1, 32, 32)  # inference sees the image only


def _logged(run: Path) -> set[str]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {name for e in entries if "losses" in e for name in e["losses"]}


def test_the_losses_logged_are_those_switched_on(paired, tmp_path):
    _fit(Pix2Pix(Pix2PixConfig(**SMALL_2D, gan_weight=0.0), paired), tmp_path / "a", 1)
    assert _logged(tmp_path / "a") == {"G_L1"}
    _fit(Pix2Pix(Pix2PixConfig(**SMALL_2D, tissue_weight=0.5), paired), tmp_path / "b", 1)
    assert _logged(tmp_path / "b") == {"D", "G_adv", "G_L1", "G_tissue"}


def test_weights_are_checked():
    with pytest.raises(UsageError, match="gan_weight"):
        Pix2PixConfig(**SMALL_2D, gan_weight=-1.0)
    # without a discriminator, a patch smaller than the PatchGAN's minimum is fine
    assert Pix2PixConfig(**{**SMALL_2D, "patch_size": [8, 8], "channels": [8, 16]}, gan_weight=0.0).gan_weight == 0


@pytest.mark.parametrize("dims", [2, 3])
def test_anatomy_augmentation_moves_mr_and_ct_alike_and_is_a_function_of_the_seed(dims):
    from medsynth.data.augment import PairedAugment

    size = (48,) * dims
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in size], indexing="ij")
    mr, ct = np.stack(axes[:2]).astype(np.float32), axes[0][None].astype(np.float32)
    augment = PairedAugment(dims, 0.0, anatomy=1.0)
    moved_mr, moved_ct = augment(mr, ct, 7)
    again_mr, again_ct = augment(mr, ct, 7)
    assert np.array_equal(moved_mr, again_mr) and np.array_equal(moved_ct, again_ct)  # same sample, same draw
    assert np.allclose(moved_mr[0], moved_ct[0], atol=1e-5)  # one deformation for both
    assert np.abs(moved_mr - mr).mean() > 0.02  # the anatomy moved
    assert not np.array_equal(augment(mr, ct, 8)[0], moved_mr)
    off_mr, off_ct = PairedAugment(dims, 0.0)(mr, ct, 7)
    assert off_mr is mr and off_ct is ct


def test_the_perception_segmenter_learns_the_ct_then_stays_frozen_while_g_trains(layered, tmp_path):
    torch.manual_seed(0)
    config = Pix2PixConfig(**{**SMALL_2D, "lr": 1e-2}, gan_weight=0.0, perception_weight=1.0, seg_pretrain_steps=200,
                           seg_channels=(8, 16), mr_scaling="percentile")
    family = Pix2Pix(config, layered)
    assert set(family.networks) == {"G", "S"} and set(family.optimizers()) == {"G", "S"}
    _fit(family, tmp_path / "run", 200)
    segmenter = family.networks["S"].eval()
    hits = total = 0
    for case in family.data.training:
        slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(case.ct[0], -1, 0)[:, None]))
        with torch.no_grad():
            predicted = np.moveaxis(segmenter(slices).argmax(1).numpy(), 0, -1)
        truth = tissue_labels(family.data.ct_intensity.denormalise(case.ct[0]))
        hits, total = hits + int((predicted == truth)[case.mask].sum()), total + int(case.mask.sum())
    assert hits / total > 0.9, hits / total
    assert _logged(tmp_path / "run") == {"S"}  # the first 200 steps train the segmenter alone

    frozen = {k: v.clone() for k, v in segmenter.state_dict().items()}
    trainer = Trainer(family, TrainConfig(steps=203, batch_size=4, val_every=0, ckpt_every=1000, preview_every=1000,
                                          log_every=1, device="cpu"), tmp_path / "run", make_runtime("cpu", False))
    trainer.step = 200
    trainer.fit()
    assert all(torch.equal(v, family.networks["S"].state_dict()[k]) for k, v in frozen.items())
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"G_L1", "G_perception"} <= set(entries[-1].get("losses", {}))
    assert set(load_model(tmp_path / "run").networks) == {"G"}  # the segmenter is for training only
