"""FastGAN on CT slices: networks, losses, DiffAugment, slice data, metrics, training and ``generate``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from typer.testing import CliRunner

import medsynth.cli.generate  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.data.diffaugment import AIR, brightness, cutout, diff_augment, translation
from medsynth.data.intensity import CTIntensity
from medsynth.data.slices import load_slices, slice_body_mask
from medsynth.engine.config import build_config
from medsynth.errors import UsageError
from medsynth.families.fastgan import (
    FastGAN,
    FastGANConfig,
    ReconLoss,
    hinge_random_targets,
    reconstruction_loss,
    reconstruction_targets,
)
from medsynth.inference.generation import latent, synthesise
from medsynth.io.image import ImageMeta, write_ct
from medsynth.metrics.anatomy import STATISTICS, anatomy_values
from medsynth.metrics.generation import (
    body_hu_histogram,
    fid,
    histogram_wasserstein,
    kid,
    memorisation,
    polynomial_mmd2,
    ssim_to_references,
)
from medsynth.modelfile import GenerationMetadata, NetworkSpec, load_model, save_model
from medsynth.nets.fastgan import FastGANDiscriminator, FastGANGenerator, SkipLayerExcitation, quarter
from medsynth.nets.generators import UNetGenerator
from medsynth.phantom.kinds import write_phantom
from medsynth.training import train

TINY = {"resolution": 64, "ngf": 8, "ndf": 8, "nz": 32, "val_samples": 16}
TINY_TRAIN = {"batch_size": 8, "device": "cpu", "val_every": 0, "preview_every": 10**6, "ckpt_every": 10**6,
              "log_every": 10**6, "ema_decay": 0.5, "decay_start": 1.0}


@pytest.fixture(scope="module")
def slices_dir(tmp_path_factory) -> Path:
    """Phantom axial CT slices of three heads, 32 x 40 pixels of 5 mm (square field 200 mm)."""
    out = tmp_path_factory.mktemp("data") / "slices"
    write_phantom("slices", out, cases=3, shape=(32, 40, 32), spacing=5.0, seed=0)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, slices_dir) -> Path:
    """A FastGAN run of 50 steps at 64² through the engine (about 15 s on a loaded 2-core machine)."""
    run = tmp_path_factory.mktemp("runs") / "fastgan"
    train("fastgan", slices_dir, run, {**TINY_TRAIN, "steps": 50}, TINY)
    return run


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- networks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [128, 256, 512, 1024])
def test_generator_image_and_sle_shapes(resolution):
    # built on the CPU (spectral norm's power iteration is slow on "meta"), run on "meta": shapes only
    generator = FastGANGenerator(resolution, nz=256, ngf=16).to("meta")
    seen = {}
    for key, sle in generator.sle.items():
        sle.register_forward_hook(lambda module, inputs, output, key=key: seen.update({key: output.shape}))
    image = generator(torch.zeros(2, 256, device="meta"))
    assert image.shape == (2, 1, resolution, resolution)
    # SLE 8->128, 16->256, 32->512 wherever the high resolution exists; channels = ngf * (1, 0.5, 0.25)
    expected = {"128": (2, 16, 128, 128), "256": (2, 8, 256, 256), "512": (2, 4, 512, 512)}
    assert seen == {k: v for k, v in expected.items() if int(k) <= resolution}


@pytest.mark.parametrize("resolution", [128, 256, 512, 1024])
def test_discriminator_logits_and_decoder_shapes(resolution):
    discriminator = FastGANDiscriminator(resolution, ndf=16).to("meta")
    image = torch.zeros(2, 1, resolution, resolution, device="meta")
    logits, whole, part = discriminator(image, part=2)
    assert logits.shape == discriminator(image).shape == (2, 1, 5, 5)
    assert whole.shape == part.shape == (2, 1, 128, 128)


def test_small_networks_really_run_at_128():
    torch.manual_seed(0)
    generator, discriminator = FastGANGenerator(128, nz=16, ngf=4).eval(), FastGANDiscriminator(128, ndf=4).eval()
    with torch.no_grad():
        image = generator(torch.randn(1, 16))
        logits, whole, part = discriminator(image, part=0)
    assert image.shape == (1, 1, 128, 128) and image.abs().max() <= 1.0
    assert torch.isfinite(logits).all() and whole.shape == part.shape == (1, 1, 128, 128)


def test_sle_gates_channels_of_the_high_resolution_map():
    sle = SkipLayerExcitation(low_channels=3, high_channels=5).eval()
    low, high = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 32, 32)
    gate = sle.gate(low)
    assert gate.shape == (2, 5, 1, 1) and ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(sle(low, high), high * gate)


def test_quarter_crops_in_array_order():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert quarter(x, 0).flatten().tolist() == [0, 1, 4, 5]
    assert quarter(x, 1).flatten().tolist() == [2, 3, 6, 7]
    assert quarter(x, 3).flatten().tolist() == [10, 11, 14, 15]


# -- losses --------------------------------------------------------------------------------------------
def test_hinge_with_random_targets_matches_a_hand_computation():
    d_real = torch.tensor([2.0, 0.0, 0.9])  # above the targets: no loss; at 0: loss u; 0.9: relu(u - 0.9)
    d_fake = torch.tensor([-2.0, 0.5])  # -2: no loss; 0.5: u' + 0.5
    loss = hinge_random_targets(d_real, d_fake, torch.Generator().manual_seed(7))
    u = 0.8 + 0.2 * torch.rand(5, generator=torch.Generator().manual_seed(7))  # u_real (3) then u_fake (2)
    by_hand = (0.0 + u[1] + max(0.0, u[2] - 0.9)) / 3 + (0.0 + u[4] + 0.5) / 2
    assert loss.item() == pytest.approx(float(by_hand), abs=1e-6)
    # whatever the draws: (0.8 + 0 + 0) / 3 + 1.3 / 2 <= loss <= (1 + 0.1) / 3 + 1.5 / 2
    assert 0.8 / 3 + 1.3 / 2 <= loss.item() <= 1.1 / 3 + 1.5 / 2


def _quarters_image() -> torch.Tensor:
    """4 x 4 image whose quarters are constant: 1, -0.5 (top right), 0.25, 0.75."""
    image = torch.empty(1, 1, 4, 4)
    for part, value in enumerate((1.0, -0.5, 0.25, 0.75)):
        quarter(image, part).fill_(value)
    return image


def test_reconstruction_targets_are_the_image_and_its_quarter():
    image = _quarters_image()
    whole, part = reconstruction_targets(image, 1, size=4)
    torch.testing.assert_close(whole, image)
    torch.testing.assert_close(part, torch.full((1, 1, 4, 4), -0.5))


@pytest.mark.parametrize(("kind", "expected"), [
    (ReconLoss.L1, (1 + 0.5 + 0.25 + 0.75) / 4 + 0.5),
    (ReconLoss.MSE, (1 + 0.25 + 0.0625 + 0.5625) / 4 + 0.25),
])
def test_reconstruction_loss_by_hand(kind, expected):
    targets = reconstruction_targets(_quarters_image(), 1, size=4)
    zeros = (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert reconstruction_loss(zeros, targets, kind).item() == pytest.approx(expected)


def test_perceptual_reconstruction_uses_the_given_distance():
    targets = reconstruction_targets(_quarters_image(), 1, size=4)
    zeros = (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))

    def distance(a, b):
        return (a.mean(dim=(1, 2, 3)) - b.mean(dim=(1, 2, 3))).abs()

    # |0 - mean image| + |0 - (-0.5)| = 0.375 + 0.5
    assert reconstruction_loss(zeros, targets, ReconLoss.PERCEPTUAL, distance).item() == pytest.approx(0.875)


class _MeanDistance(torch.nn.Module):
    """A stand-in perceptual model: per-sample distance of 4x4-pooled images."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(a - b, 4)
        return pooled.abs().mean(dim=(1, 2, 3))


def test_perceptual_model_from_a_torchscript_file_trains(slices_dir, tmp_path):
    torch.jit.script(_MeanDistance()).save(str(tmp_path / "percept.pt"))
    model = {**TINY, "ngf": 4, "ndf": 4, "recon_loss": "perceptual", "perceptual_model": str(tmp_path / "percept.pt")}
    result = train("fastgan", slices_dir, tmp_path / "run", {**TINY_TRAIN, "batch_size": 2, "steps": 2}, model)
    assert result.steps_done == 2 and 0 < result.last_losses["D_rec"] < 4  # two distances of images in [-1, 1]


@pytest.mark.parametrize(("settings", "message"), [
    ({"resolution": 96}, "resolution 96"),
    ({"window": [100, -100]}, "low < high"),
    ({"diffaugment": ["saturation"]}, "saturation"),
    ({"recon_loss": "perceptual"}, "perceptual_model"),
    ({"perceptual_model": "missing.pt", "recon_loss": "perceptual"}, "missing.pt"),
])
def test_bad_settings_are_refused_in_one_sentence(settings, message):
    with pytest.raises(UsageError, match=message):
        build_config(FastGANConfig, settings)


# -- DiffAugment ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [["brightness"], ["contrast"], ["translation"], ["cutout"],
                                    ["brightness", "contrast", "translation", "cutout"]])
def test_diffaugment_keeps_shape_range_and_gradients(policy):
    torch.manual_seed(0)
    x = (2 * torch.rand(6, 1, 32, 32) - 1).requires_grad_()
    y = diff_augment(x, policy)
    assert y.shape == x.shape
    assert y.min() >= -1.0 and y.max() <= 1.0
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_sets_a_half_size_square_to_air():
    y = cutout(torch.ones(4, 1, 16, 12))
    assert ((y == AIR).sum(dim=(1, 2, 3)) == 8 * 6).all()


def test_translation_moves_a_point_by_at_most_an_eighth():
    x = torch.full((16, 1, 32, 32), AIR)
    x[:, :, 16, 16] = 1.0
    y = translation(x)
    moved = [torch.nonzero(image[0] == 1.0)[0] - 16 for image in y]
    assert all(d.abs().max() <= 4 for d in moved)  # 32 / 8
    assert len({tuple(d.tolist()) for d in moved}) > 1  # shifts are drawn per image
    assert ((y == 1.0).sum(dim=(1, 2, 3)) == 1).all() and ((y == AIR).sum(dim=(1, 2, 3)) == 32 * 32 - 1).all()


def test_brightness_shifts_each_image_by_one_offset():
    y = brightness(torch.zeros(8, 1, 4, 4))
    offsets = y.amax(dim=(1, 2, 3))
    assert (y == offsets.view(-1, 1, 1, 1)).all() and offsets.abs().max() <= 0.25


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="saturation"):
        diff_augment(torch.zeros(1, 1, 8, 8), ["saturation"])


# -- slices ---------------------------------------------------------------------------------------------
def test_slices_from_a_volume_are_ras_square_cached_and_spaced(tmp_path):
    """A volume stored right-to-left (negative x spacing) with body on axial slices 1..4 only."""
    hu = np.full((20, 30, 6), -1000.0)
    hu[2:18, 5:25, 1:5] = 40.0
    hu[2:4, 12:18, 1:5] = 1500.0  # bone at low voxel x, which is the patient's right (most positive x)
    affine = np.diag([-1.5, 1.0, 3.0, 1.0])
    write_ct(tmp_path / "vol.nii.gz", hu, ImageMeta.from_affine(affine, hu.shape))
    slices = load_slices(tmp_path, resolution=64)
    assert slices.hu.shape == (4, 64, 64) and slices.hu.dtype == np.int16
    # field 20 * 1.5 = 30 mm by 30 * 1 = 30 mm is square already: 30 mm / 64 pixels
    assert slices.spacing == pytest.approx((30 / 64, 30 / 64))
    assert slices.thickness == 3.0
    assert slices.sources == ["vol"] * 4
    bone_rows = np.nonzero(slices.hu[0].max(axis=1) > 1000)[0]
    assert bone_rows.min() > 48  # RAS: the right side ends at high x indices


def test_slices_from_2d_files_keep_aspect_by_padding(tmp_path):
    hu = np.full((20, 40), -1000.0)
    hu[4:16, 8:32] = 40.0
    write_ct(tmp_path / "a.nii.gz", hu, ImageMeta.from_affine(np.diag([2.0, 1.0, 5.0, 1.0]), hu.shape))
    slices = load_slices(tmp_path, resolution=64)
    assert slices.spacing == pytest.approx((40 / 64, 40 / 64)) and slices.thickness == 5.0
    body = slice_body_mask(slices.hu[0])
    # 24 mm x 24 mm of body in a 40 mm square field: 38.4 x 38.4 pixels
    assert body.sum() == pytest.approx(38.4**2, rel=0.08)


def test_body_mask_fills_cavities_and_drops_the_table():
    hu = np.full((40, 40), -1000.0)
    hu[5:30, 5:30] = 40.0
    hu[12:20, 12:20] = -1000.0  # an air cavity inside
    hu[35:37, 2:38] = 100.0  # the table
    mask = slice_body_mask(hu)
    assert mask.sum() == 25 * 25 and not mask[36].any()


def test_a_dataset_without_body_is_refused(tmp_path):
    hu = np.full((16, 16), -1000.0)
    hu[0, 0] = 0.0
    write_ct(tmp_path / "empty.nii.gz", hu, ImageMeta.from_affine(np.eye(4), hu.shape))
    with pytest.raises(Exception, match="no slice has body"):
        load_slices(tmp_path, resolution=64)


# -- metrics --------------------------------------------------------------------------------------------
def _block_slices(value: float, count: int = 3) -> np.ndarray:
    hu = np.full((count, 16, 16), -1000.0)
    hu[:, 4:12, 4:12] = value
    return hu


def test_histogram_wasserstein_of_shifted_body_values():
    assert histogram_wasserstein(body_hu_histogram(_block_slices(0.0)),
                                 body_hu_histogram(_block_slices(100.0))) == pytest.approx(100.0)
    assert np.isnan(histogram_wasserstein(body_hu_histogram(np.full((1, 8, 8), -1000.0)),
                                          body_hu_histogram(_block_slices(0.0))))


def test_ssim_matrix_matches_scikit_image():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 20, 24)).astype(np.float32)
    references = np.clip(images * 0.5 + rng.normal(0, 0.2, images.shape), -1, 1).astype(np.float32)
    matrix = ssim_to_references(torch.from_numpy(images), torch.from_numpy(references))
    for i in range(2):
        for j in range(2):
            assert matrix[i, j].item() == pytest.approx(
                structural_similarity(images[i], references[j], data_range=2.0), abs=1e-5)


def test_memorisation_flags_a_copy_and_not_noise():
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.uniform(-1, 1, (4, 24, 24)).astype(np.float32))
    generated = torch.stack([real[2], torch.from_numpy(rng.uniform(-1, 1, (24, 24)).astype(np.float32))])
    report = memorisation(generated, real, ["a", "a", "b", "b"])
    assert report["nn_ssim_max"] == pytest.approx(1.0)
    assert report["near_copies"] == 1 and report["near_copy_indices"] == [0]
    assert report["real_nn_ssim_max"] < 0.2  # the baseline compares files a and b only


def test_polynomial_mmd_by_hand():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]])
    # k = (ab + 1)^3: within x 1, within y 7^3 = 343, across (1 + 1 + 27 + 64) / 4
    assert polynomial_mmd2(x, y) == pytest.approx(1 + 343 - 2 * 93 / 4)
    assert kid(x, y) == (pytest.approx(1 + 343 - 2 * 93 / 4), 0.0)


def test_fid_of_shifted_features_is_the_squared_shift():
    fake = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)).double()
    assert fid(fake + torch.tensor([1.0, 2.0, 2.0]), fake) == pytest.approx(9.0, abs=1e-4)


# -- training and generation ------------------------------------------------------------------------------
def test_latents_are_seeded_and_truncated():
    assert np.array_equal(latent(3, 5, 64, None), latent(3, 5, 64, None))
    assert not np.array_equal(latent(3, 5, 64, None), latent(3, 6, 64, None))
    assert np.abs(latent(3, 5, 1000, 0.5)).max() <= 0.5


def _body_distance(generator: torch.nn.Module, slices_dir: Path) -> float:
    intensity = CTIntensity()
    real = load_slices(slices_dir, 64)
    hu = intensity.denormalise(synthesise(generator, 32, range(16), 0, None, torch.device("cpu")).numpy())
    return histogram_wasserstein(body_hu_histogram(np.rint(hu)), body_hu_histogram(real.hu))


@pytest.mark.slow
def test_training_brings_the_hu_histogram_closer(trained, slices_dir):
    torch.manual_seed(0)
    untrained = _body_distance(FastGANGenerator(64, nz=32, ngf=8), slices_dir)
    learnt = _body_distance(load_model(trained, "fastgan").build("G"), slices_dir)
    assert learnt < 0.6 * untrained, (learnt, untrained)  # measured: 358 vs 888 HU


def test_the_model_metadata_is_typed_and_keeps_its_json_document(trained):
    document = load_model(trained, "fastgan").metadata
    metadata = GenerationMetadata.from_json(document, trained)
    assert isinstance(metadata.intensity, CTIntensity) and metadata.nz == 32 and len(metadata.spacing) == 2
    assert metadata.to_json() == document  # keys it does not type (versions, training steps) in provenance
    del document["slice_thickness"]  # the generator's geometry assumed 1 mm where a file lacked it
    assert GenerationMetadata.from_json(document).slice_thickness == 1.0


def test_generate_writes_int16_hu_with_training_spacing_reproducibly(trained, tmp_path):
    assert _invoke("generate", trained, tmp_path / "a", "--count", 3, "--seed", 5).exit_code == 0
    assert _invoke("generate", trained, tmp_path / "b", "--count", 5, "--seed", 5).exit_code == 0
    assert _invoke("generate", trained, tmp_path / "c", "--count", 3, "--seed", 6).exit_code == 0
    image = nib.load(tmp_path / "a" / "generated_0000.nii.gz")
    assert image.get_data_dtype() == np.int16 and image.shape == (64, 64)
    # three heads of 32 x 40 pixels at 5 mm: a 200 mm square field over 64 pixels
    assert image.header.get_zooms() == pytest.approx((200 / 64, 200 / 64))
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    for index in range(3):
        name = f"generated_{index:04d}.nii.gz"
        first = np.asarray(nib.load(tmp_path / "a" / name).dataobj)
        assert np.array_equal(first, np.asarray(nib.load(tmp_path / "b" / name).dataobj))
        assert not np.array_equal(first, np.asarray(nib.load(tmp_path / "c" / name).dataobj))
    assert (tmp_path / "a" / "generated_grid.png").is_file()


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 4 features of 6 slices: FID is only smoke-tested here
def test_generate_eval_writes_metrics_with_fid_and_kid(trained, slices_dir, tmp_path):
    extractor = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(),
                                                     torch.nn.AdaptiveAvgPool2d(1)))
    extractor.save(str(tmp_path / "features.pt"))
    result = _invoke("generate", trained, tmp_path / "out", "--count", 6, "--eval", slices_dir,
                     "--features", tmp_path / "features.pt", "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "generation_metrics.json").read_text())
    assert metrics["generated_slices"] == 6 and metrics["real_slices"] == len(load_slices(slices_dir, 64))
    for key in ("hu_wasserstein", "fid", "kid", "nn_ssim_max", "real_nn_ssim_mean"):
        assert np.isfinite(metrics[key]), key
    assert metrics["nn_ssim_max"] <= 1.0 and "hu_wasserstein" in result.output
    assert set(metrics["anatomy"]) == set(STATISTICS) and "two_lungs" in result.output
    real_spine = anatomy_values(load_slices(slices_dir, 64).hu)["spine"].mean()
    assert metrics["anatomy"]["spine"]["real"] == pytest.approx(real_spine)


def test_generate_refuses_other_families_and_bad_counts(trained, tmp_path):
    unet = UNetGenerator(spatial_dims=2, channels=(4, 8), strides=(2,))
    spec = NetworkSpec("medsynth.UNetGenerator", {"spatial_dims": 2, "channels": [4, 8], "strides": [2]})
    save_model(tmp_path / "pix2pix.safetensors", "pix2pix", {"G": (spec, unet)}, {})
    result = _invoke("generate", tmp_path / "pix2pix.safetensors", tmp_path / "out", "--count", 2)
    assert result.exit_code == 2 and "'pix2pix' model" in _one_error_line(result)
    result = _invoke("generate", trained, tmp_path / "out", "--count", 0)
    assert result.exit_code == 2 and "--count 0" in _one_error_line(result)
    assert _invoke("generate", trained, tmp_path / "out", "--count", 1).exit_code == 0
    result = _invoke("generate", trained, tmp_path / "out", "--count", 1)
    assert result.exit_code == 2 and "--overwrite" in _one_error_line(result)


@pytest.mark.slow
def test_an_interrupted_run_resumes_exactly(slices_dir, tmp_path, monkeypatch):
    """SIGINT after step 3 of 6, then --resume: the same weights as 6 uninterrupted steps."""
    options = {**TINY_TRAIN, "batch_size": 2, "steps": 6}
    small = {**TINY, "ngf": 4, "ndf": 4}
    train("fastgan", slices_dir, tmp_path / "straight", options, small)
    step = FastGAN.train_step

    def interrupted_step(self, batch, ctx):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch, ctx)

    monkeypatch.setattr(FastGAN, "train_step", interrupted_step)
    assert train("fastgan", slices_dir, tmp_path / "resumed", options, small).steps_done == 3
    monkeypatch.undo()
    assert train("fastgan", slices_dir, tmp_path / "resumed", options, small, resume=True).steps_done == 6
    straight, resumed = (load_model(tmp_path / run, "fastgan") for run in ("straight", "resumed"))
    for key, value in straight.weights["G"].items():
        torch.testing.assert_close(resumed.weights["G"][key], value, msg=key)
