"""CycleGAN with shape consistency: loss terms by hand, the image pool, learning, resume, export, translate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import medsynth.cli.translate  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.data.bodymask import body_mask
from medsynth.data.intensity import LANDMARK_COUNT, MRIntensity, MRScaling, normalise_mr_body
from medsynth.data.volumes import on_grid
from medsynth.engine.trainer import validation_metrics
from medsynth.errors import InputError, UsageError
from medsynth.families.cyclegan import CycleGAN, CycleGANConfig
from medsynth.io.image import read_image, write_image
from medsynth.losses.cycle import (
    cycle_consistency_loss,
    identity_loss,
    segmentation_loss,
    shape_consistency_loss,
)
from medsynth.losses.image_pool import ImagePool
from medsynth.modelfile import TranslationMetadata, load_model
from medsynth.phantom.kinds import write_phantom
from medsynth.training import train

SHAPE = (32, 32, 32)
SPACING = 5.0
# Small 2D networks that still learn within a few dozen steps on a CPU.
TINY = {"dims": 2, "patch_size": [32, 32], "channels": [8, 16, 32], "strides": [1, 2], "seg_channels": [8, 16, 32],
        "num_res_units": 0, "disc_channels": 8, "disc_layers": 2, "lr": 1e-3, "seg_lr": 5e-3, "val_cases": 1}
QUIET = {"device": "cpu", "batch_size": 2, "preview_every": 10_000, "ckpt_every": 10_000, "log_every": 1}

# segmentation_loss on logits (0, ln 3) → p = (1/4, 3/4), label 1, and (0, 0) → p = (1/2, 1/2), label 0:
#   CE   = −(ln ¾ + ln ½)/2
#   Dice: label 0: 1 − 2·½/(¾ + 1) = 3/7;  label 1: 1 − 2·¾/(5/4 + 1) = 1/3;  mean 8/21
HAND_DICE_CE = 8 / 21 - (math.log(0.75) + math.log(0.5)) / 2


# -- loss terms -------------------------------------------------------------------------------------------
def test_cycle_and_identity_losses_are_mean_absolute_errors():
    real = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    other = torch.tensor([[[[1.0, 1.0], [0.0, 3.0]]]])
    assert cycle_consistency_loss(other, real).item() == pytest.approx((1 + 0 + 2 + 0) / 4)
    assert identity_loss(real, other).item() == pytest.approx(0.75)
    assert cycle_consistency_loss(real, real).item() == 0.0


def _two_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (B=1, K=2, 2 voxels)
    labels = torch.tensor([[[1, 0]]])
    return logits, labels


def test_segmentation_loss_is_cross_entropy_plus_dice_by_hand():
    logits, labels = _two_voxels()
    assert segmentation_loss(logits, labels).item() == pytest.approx(HAND_DICE_CE, abs=1e-5)


def test_segmentation_loss_counts_labelled_samples_only():
    logits, labels = _two_voxels()
    batch_logits = torch.cat([logits, torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]])])
    batch_labels = torch.cat([labels, torch.tensor([[[1, 0]]])])  # badly predicted, but unlabelled
    labelled = torch.tensor([True, False])
    assert segmentation_loss(batch_logits, batch_labels, labelled).item() == pytest.approx(HAND_DICE_CE, abs=1e-5)
    nothing = segmentation_loss(batch_logits.requires_grad_(), batch_labels, torch.tensor([False, False]))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_shape_consistency_loss_segments_the_translation_and_trains_only_through_it():
    # A 1×1 convolution with weights (1, −1) turns an image value t into logits (t, −t); the values
    # −ln3/2 and 0 give the softmax of the hand-computed example above.
    segmenter = torch.nn.Conv1d(1, 2, 1, bias=False)
    with torch.no_grad():
        segmenter.weight.copy_(torch.tensor([[[1.0]], [[-1.0]]]))
    segmenter.requires_grad_(False)
    translated = torch.tensor([[[-math.log(3.0) / 2, 0.0]]], requires_grad=True)
    _, labels = _two_voxels()
    loss = shape_consistency_loss(segmenter, translated, labels, torch.tensor([True]))
    assert loss.item() == pytest.approx(HAND_DICE_CE, abs=1e-5)
    loss.backward()
    assert translated.grad.abs().sum() > 0  # the generator side learns from it


# -- image pool -------------------------------------------------------------------------------------------
def _images(values: list[float]) -> list[torch.Tensor]:
    return [torch.full((1, 1, 1, 1), v) for v in values]


def test_pool_returns_new_images_until_full_then_stored_ones_about_half_the_time():
    pool = ImagePool(size=50, seed=3)
    for image in _images(list(range(50))):
        assert torch.equal(pool.query(image), image)
    assert len(pool) == 50
    swapped = sum(pool.query(image).item() != value
                  for value, image in zip(range(1000, 3000), _images(list(range(1000, 3000))), strict=True))
    assert 0.45 < swapped / 2000 < 0.55
    assert len(pool) == 50


def test_pool_exchange_follows_its_seeded_generator_exactly():
    """Once full, a draw u < ½ swaps the new image for the stored one in slot randint(size)."""
    pool, replay = ImagePool(size=2, seed=7), torch.Generator().manual_seed(7)
    stored = [0.0, 1.0]
    pool.query(torch.stack([t[0] for t in _images(stored)]))
    for value in [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]:
        expected = value
        if torch.rand((), generator=replay).item() < 0.5:
            slot = int(torch.randint(2, (), generator=replay).item())
            expected, stored[slot] = stored[slot], value
        assert pool.query(_images([value])[0]).item() == expected
    assert sorted(image.item() for image in pool.images) == sorted(stored)


def test_pool_state_round_trip_continues_identically_and_size_zero_passes_through():
    first = ImagePool(size=3, seed=1)
    for image in _images([0.0, 1.0, 2.0, 3.0, 4.0]):
        first.query(image)
    second = ImagePool(size=3, seed=99)
    second.load_state_dict(first.state_dict())
    for image in _images([5.0, 6.0, 7.0, 8.0, 9.0, 10.0]):
        assert torch.equal(first.query(image), second.query(image))
    fake = torch.ones(2, 1, 1, 1, requires_grad=True)
    assert ImagePool(size=0).query(fake) is fake


# -- data and configuration -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unpaired(tmp_path_factory) -> Path:
    return write_phantom("unpaired", tmp_path_factory.mktemp("unpaired"), cases=3, shape=SHAPE, spacing=SPACING).out


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> Path:
    return write_phantom("paired", tmp_path_factory.mktemp("paired"), cases=1, shape=SHAPE, spacing=SPACING,
                         seed=5).out


def test_shape_consistency_without_label_maps_is_refused(tmp_path, unpaired):
    for domain in ("mr", "ct"):
        (tmp_path / domain).symlink_to(unpaired / domain)
    with pytest.raises(UsageError, match="label maps of both domains"):
        CycleGAN(CycleGANConfig(**TINY), tmp_path)
    family = CycleGAN(CycleGANConfig(**{**TINY, "shape_weight": 0.0}), tmp_path)
    assert family.num_labels == 0 and "S_ct" not in family.networks and "S" not in family.optimizers()


def test_bad_label_maps_are_reported(tmp_path, unpaired):
    for folder in ("mr", "ct", "ct_labels"):
        (tmp_path / folder).symlink_to(unpaired / folder)
    (tmp_path / "mr_labels").mkdir()
    image = read_image(next((unpaired / "mr_labels").iterdir()), check_values=False)
    write_image(tmp_path / "mr_labels" / "case_000.nii.gz", image.array + 0.5, image.meta)
    with pytest.raises(InputError, match="negative or fractional"):
        CycleGAN(CycleGANConfig(**TINY), tmp_path)
    write_image(tmp_path / "mr_labels" / "stray.nii.gz", image.array, image.meta)
    with pytest.raises(InputError, match=r"stray\.nii\.gz has no image"):
        CycleGAN(CycleGANConfig(**TINY), tmp_path)


def test_samples_hold_both_domains_and_label_maps(unpaired):
    family = CycleGAN(CycleGANConfig(**TINY), unpaired)
    sample = family.sample(0)
    assert family.num_labels == 6  # background, soft tissue, bone, brain, CSF, air cavity
    assert sample["mr"].shape == sample["ct"].shape == (1, 32, 32)
    assert sample["mr_labels"].dtype == torch.int64 and int(sample["ct_labels"].max()) < 6
    assert bool(sample["mr_labelled"]) and torch.equal(family.sample(0)["ct"], sample["ct"])
    assert len(family.data.training["mr"]) == 2 and len(family.data.validation["mr"]) == 1  # val_cases: 1


def test_histogram_landmarks_are_fitted_on_the_training_mr_bodies_and_travel_in_the_model(unpaired):
    """With ``mr_scaling: histogram`` the landmarks are learnt from the training MRs' bodies (held-out cases
    excluded), as for pix2pix, and the exported model carries them to translate; percentile scaling is as it was."""
    family = CycleGAN(CycleGANConfig(**TINY, mr_scaling=MRScaling.HISTOGRAM), unpaired)
    data = family.data
    held = {name.removeprefix("mr/") for name in data.split.val if name.startswith("mr/")}
    training = [on_grid(data.grid, read_image(path)) for path in sorted((unpaired / "mr").iterdir())
                if path.name.removesuffix(".nii.gz") not in held]
    expected = MRIntensity(scaling=MRScaling.HISTOGRAM).fit_landmarks(
        mr[body_mask(mr, dilation=0, modality="mr")] for mr in training)
    assert len(training) == 2 and len(held) == 1
    assert data.mr_intensity == expected
    assert np.abs(np.asarray(expected.landmarks) - np.linspace(-1.0, 1.0, LANDMARK_COUNT)).max() > 0.05
    assert np.array_equal(data.training["mr"][0].image[0], normalise_mr_body(expected, training[0]))
    stored = TranslationMetadata.from_json(json.loads(json.dumps(family.export().metadata.to_json())))
    assert stored.directions["mr2ct"].source == expected and stored.directions["ct2mr"].target == expected
    default = CycleGAN(CycleGANConfig(**TINY), unpaired).data
    assert default.mr_intensity == MRIntensity()  # percentile: nothing fitted
    assert np.array_equal(default.training["mr"][0].image[0], normalise_mr_body(MRIntensity(), training[0]))


# -- training ---------------------------------------------------------------------------------------------------
def _losses(run: Path) -> dict[str, list[float]]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    series: dict[str, list[float]] = {}
    for entry in entries:
        for name, value in entry.get("losses", {}).items():
            series.setdefault(name, []).append(value)
    return series


@pytest.fixture(scope="module")
def trained(tmp_path_factory, unpaired, paired) -> tuple[Path, dict[str, float]]:
    """A tiny 2D run with paired validation data, and the validation metrics before training."""
    torch.manual_seed(0)
    untrained = CycleGAN(CycleGANConfig(**TINY, val_data=str(paired)), unpaired)
    before = validation_metrics(untrained, untrained.networks, torch.device("cpu"))
    run = tmp_path_factory.mktemp("cyclegan") / "run"
    train("cyclegan", unpaired, run, {**QUIET, "steps": 100, "val_every": 100},
          {**TINY, "val_data": str(paired), "seg_pretrain_steps": 20})
    return run, before


@pytest.mark.slow
def test_a_tiny_2d_run_learns(trained):
    run, before = trained
    losses = _losses(run)
    assert len(losses["S_ct"]) == 100 and len(losses["cycle"]) == 80  # 20 segmenter-only steps first
    assert np.mean(losses["cycle"][-10:]) < 0.4 * np.mean(losses["cycle"][:5])
    after = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][-1]["validation"]
    assert after["dice_real_ct"] > before["dice_real_ct"] + 0.3  # S_CT learns from real CT
    assert after["dice_mr2ct"] > before["dice_mr2ct"] + 0.1  # and finds anatomy in translated MR
    assert {"mae", "psnr", "ssim", "bone_dice", "dice_mr2ct_2", "dice_ct2mr"} <= set(after)


def test_export_names_both_directions(trained):
    model = load_model(trained[0] / "model.safetensors", "cyclegan")
    directions = model.metadata["directions"]
    assert directions["mr2ct"]["network"] == "G_mr2ct" and directions["ct2mr"]["network"] == "G_ct2mr"
    assert directions["mr2ct"]["target"]["modality"] == "ct" and directions["ct2mr"]["target"]["modality"] == "mr"
    assert set(model.networks) == {"G_mr2ct", "G_ct2mr"}
    assert model.metadata["spatial_dims"] == 2 and model.metadata["spacing"] == [SPACING] * 3


# Segmenter-only warm-up steps leave G and D's optimisers idle; the engine's schedule is by step, so
# torch's "scheduler before optimizer" warning must not reach the user.
@pytest.mark.filterwarnings("error:Detected call of `lr_scheduler")
def test_a_3d_run_trains_validates_and_exports(tmp_path, unpaired, paired):
    tiny_3d = {"dims": 3, "patch_size": [16, 16, 16], "channels": [4, 8, 16], "seg_channels": [4, 8, 16],
               "disc_channels": 4, "disc_layers": 2, "val_data": str(paired), "seg_pretrain_steps": 1}
    result = train("cyclegan", unpaired, tmp_path / "run3d", {**QUIET, "batch_size": 1, "steps": 2, "val_every": 2},
                   tiny_3d)
    assert 0.0 <= result.validation["dice_mr2ct"] <= 1.0 and result.validation["mae"] > 0
    assert load_model(result.model_path).metadata["spatial_dims"] == 3


@pytest.mark.slow
def test_resume_carries_the_image_pools(tmp_path, unpaired):
    options = {**TINY, "pool_size": 3, "val_cases": 0}
    straight = tmp_path / "straight"
    train("cyclegan", unpaired, straight, {**QUIET, "steps": 4, "val_every": 0}, options)
    split = tmp_path / "split"
    train("cyclegan", unpaired, split, {**QUIET, "steps": 2, "val_every": 0}, options)
    train("cyclegan", unpaired, split, {"steps": 4}, {}, resume=True)
    states = [torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (straight, split)]
    for domain in ("mr", "ct"):
        pools = [state["family"]["pools"][domain] for state in states]
        assert len(pools[0]["images"]) == 3  # 4 steps × 2 images, pool of 3
        for a, b in zip(pools[0]["images"], pools[1]["images"], strict=True):
            torch.testing.assert_close(a, b)
        assert torch.equal(pools[0]["generator"], pools[1]["generator"])


# -- translate ---------------------------------------------------------------------------------------------------
def _oblique_input(source: Path, out: Path, write_volume, oblique_affine) -> Path:
    """The first image of ``source`` on an oblique LPS grid: the output must come back on exactly this grid."""
    volume = read_image(next(source.iterdir()))
    affine = oblique_affine(spacing=(SPACING, SPACING * 1.2, SPACING), lps=True)
    return write_volume(out / "case_x.nii.gz", volume.array, affine)


def test_translate_writes_both_directions_on_the_input_grid(tmp_path, trained, unpaired, write_volume,
                                                           oblique_affine):
    for direction, source, dtype in (("mr2ct", "mr", np.int16), ("ct2mr", "ct", np.float32)):
        inputs = tmp_path / f"in_{source}"
        inputs.mkdir()
        given = nib.load(_oblique_input(unpaired / source, inputs, write_volume, oblique_affine))
        result = CliRunner().invoke(app, ["translate", str(trained[0]), str(inputs), str(tmp_path / direction),
                                          "--direction", direction, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        written = nib.load(tmp_path / direction / "case_x.nii.gz")
        assert written.shape == SHAPE and np.allclose(written.affine, given.affine)
        assert int(written.header["qform_code"]) == int(given.header["qform_code"])
        assert written.get_data_dtype() == dtype


def test_translate_refuses_ct2mr_for_a_pix2pix_model(tmp_path, paired):
    run = tmp_path / "pix2pix"
    train("pix2pix", paired, run, {**QUIET, "steps": 1, "val_every": 0},
          {"dims": 2, "patch_size": [16, 16], "channels": [4, 8], "disc_channels": 4, "disc_layers": 2})
    result = CliRunner().invoke(app, ["translate", str(run), str(paired / "ct"), str(tmp_path / "out"),
                                      "--direction", "ct2mr"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mr2ct only" in lines[0] and "ct2mr is not available" in lines[0]
