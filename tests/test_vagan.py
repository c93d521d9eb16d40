"""VA-GAN: the WGAN-GP penalty by hand, the critic's design and schedule, learning on a toy data set
(Baumgartner et al.'s box-shaped effect), the saliency baseline, and ``medsynth attribute`` end to end."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import medsynth.cli.attribute  # noqa: F401  (registers the command)
from medsynth.cli.app import app
from medsynth.data.attribution import AttributionData
from medsynth.data.bodymask import body_mask
from medsynth.data.intensity import LANDMARK_COUNT, MRIntensity, MRScaling
from medsynth.data.volumes import IntensityRegion, on_grid
from medsynth.engine.trainer import validation_metrics
from medsynth.families.vagan import VAGAN, VAGANConfig, critic_iterations, map_weight
from medsynth.inference.attribution import GradientSaliency
from medsynth.io import ImageMeta, write_image
from medsynth.io.image import read_image
from medsynth.losses.adversarial import gradient_penalty
from medsynth.modelfile import AttributionMetadata, NetworkSpec, load_model, save_model
from medsynth.nets.critic import Classifier, Critic
from medsynth.nets.generators import UNetGenerator
from medsynth.phantom.anatomy import make_attribution_case
from medsynth.training import train

TOY_SHAPE = (16, 16, 6)
TOY_SPACING = 3.0
EFFECT = -250.0  # the disease darkens a box inside the "brain" by this much
TRAIN = {"steps": 200, "batch_size": 8, "val_every": 0, "ckpt_every": 1000, "preview_every": 1000, "device": "cpu"}
# λ_map = 30 instead of 100: the toy's 16×16 slices make the L1 term relatively stronger (docs/vagan.md).
MODEL = {"dims": 2, "channels": [8, 16, 32], "critic_channels": [8, 16, 32], "critic_steps": 2,
         "critic_steps_boost": 5, "boost_first": 5, "boost_every": 0, "flip_axes": [], "val_cases": 2, "lr": 1e-3,
         "lambda_map": 30.0}


class Linear(nn.Module):
    """C(x) = Σ w·x: its input gradient is w for every sample."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1)


# -- gradient penalty ---------------------------------------------------------------------------------


def test_gradient_penalty_is_the_per_sample_norm_over_all_axes():
    # w is 1 on the four voxels of channel 0 and 0 on channel 1: ‖w‖ = 2, so the penalty is (2 − 1)² = 1.
    weight = torch.zeros(2, 2, 2)
    weight[0] = 1.0
    real, fake = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    penalty = gradient_penalty(Linear(weight), real, fake)
    assert penalty.item() == pytest.approx(1.0, abs=1e-6)
    # The norm over the channel axis alone is 1 at every voxel, so that variant sees nothing to penalise.
    per_voxel = weight.expand(3, 2, 2, 2).norm(dim=1)
    assert ((per_voxel - 1.0) ** 2).mean().item() == 0.0
    # Over the first spatial axis alone (axis 1 of the official code's NHWC tensors) the norms are √2 on
    # channel 0 and 0 on channel 1: ((√2 − 1)² + 1)/2, yet another quantity.
    per_row = weight.expand(3, 2, 2, 2).norm(dim=2)
    assert ((per_row - 1.0) ** 2).mean().item() == pytest.approx(((math.sqrt(2) - 1) ** 2 + 1) / 2)


def test_gradient_penalty_scales_with_the_weight_norm():
    weight = torch.full((1, 3, 4), 0.5)  # ‖w‖ = sqrt(12·0.25) = √3
    penalty = gradient_penalty(Linear(weight), torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4))
    assert penalty.item() == pytest.approx((math.sqrt(3.0) - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_is_finite_when_the_gradient_is_zero():
    critic = Linear(torch.zeros(1, 4, 4))  # ∇C = 0: the norm sits at its non-differentiable point
    penalty = gradient_penalty(critic, torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4))
    penalty.backward()
    assert penalty.item() == 1.0
    assert torch.isfinite(critic.weight.grad).all()


_DDP_WORKER = """
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from medsynth.losses.adversarial import gradient_penalty
from medsynth.nets.critic import Critic
dist.init_process_group("gloo")
rank, folder = dist.get_rank(), sys.argv[1]
critic = Critic(2, channels=(4, 8))
critic.load_state_dict(torch.load(folder + "/critic.pt"))
real, fake = (t.chunk(2)[rank] for t in torch.load(folder + "/batch.pt"))
wrapped = DistributedDataParallel(critic)
loss = 10 * gradient_penalty(wrapped, real, real) - (wrapped(real).mean() - wrapped(fake).mean())
loss.backward()
torch.save({n: p.grad for n, p in critic.named_parameters()}, f"{folder}/grads{rank}.pt")
del wrapped  # DDP's reducer must go before its process group, or gloo may abort at exit
dist.barrier()
dist.destroy_process_group()
"""


def _critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # real as both ends of the interpolation: x̂ = real whatever ε, so both processes see the same points
    return 10 * gradient_penalty(critic, real, real) - (critic(real).mean() - critic(fake).mean())


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed support")
def test_gradient_penalty_under_ddp_equals_the_single_process_gradient(tmp_path):
    """The penalty's double backward through DistributedDataParallel (2 CPU processes, gloo, half the
    batch each) gives the critic the gradient of one process on the whole batch."""
    torch.manual_seed(0)
    critic = Critic(2, channels=(4, 8))
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    torch.save(critic.state_dict(), tmp_path / "critic.pt")
    torch.save((real, fake), tmp_path / "batch.pt")
    (tmp_path / "worker.py").write_text(_DDP_WORKER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", str(tmp_path / "worker.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    _critic_loss(critic, real, fake).backward()
    for rank in (0, 1):
        synced = torch.load(tmp_path / f"grads{rank}.pt")
        for name, parameter in critic.named_parameters():
            torch.testing.assert_close(synced[name], parameter.grad, rtol=1e-4, atol=1e-6)


# -- critic and schedule ------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_critic_has_no_normalisation_and_scores_each_image_alone(dims):
    critic = Critic(dims, channels=(4, 8, 16)).eval()
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    assert not [m for m in critic.modules() if isinstance(m, norms)]
    batch = torch.randn(3, 1, *([12] * dims))
    scores = critic(batch)
    assert scores.shape == (3,)
    assert torch.allclose(critic(batch[:1]), scores[:1], atol=1e-5)  # no coupling between samples
    assert [m for m in Classifier(dims).modules() if isinstance(m, norms)]  # the classifier may normalise


def test_map_weight_keeps_the_official_balance_at_any_image_size():
    assert map_weight(None, (112, 112)) == pytest.approx(100.0)
    # λ/√N is what stays fixed: 4× the voxels, twice the weight.
    assert map_weight(None, (224, 224)) == pytest.approx(200.0)
    assert map_weight(None, (40, 48)) == pytest.approx(100.0 * math.sqrt(40 * 48) / 112)
    assert map_weight(None, (40, 48, 40)) == pytest.approx(map_weight(None, (40, 48)) * math.sqrt(40))
    assert map_weight(7.5, (40, 48, 40)) == 7.5


def test_critic_schedule_follows_the_official_code():
    config = VAGANConfig()
    counts = {step: critic_iterations(step, config) for step in (0, 1, 24, 25, 99, 100, 101, 200)}
    assert counts == {0: 100, 1: 100, 24: 100, 25: 5, 99: 5, 100: 100, 101: 5, 200: 100}
    small = VAGANConfig(critic_steps=2, critic_steps_boost=7, boost_first=3, boost_every=0)
    assert [critic_iterations(s, small) for s in (0, 2, 3, 100)] == [7, 7, 2, 2]


# -- a toy data set: a disc with noise; patients have a darkened box --------------------------------


def _write_toy(root: Path, controls: int = 6, patients: int = 6) -> Path:
    meta = ImageMeta.from_affine(np.diag([TOY_SPACING] * 3 + [1.0]), TOY_SHAPE)
    x, y = np.meshgrid(*[np.arange(n) for n in TOY_SHAPE[:2]], indexing="ij")
    disc = ((x - 7.5) ** 2 + (y - 7.5) ** 2 < 36)[..., None].repeat(TOY_SHAPE[2], 2)
    for i in range(controls + patients):
        rng = np.random.default_rng(i)
        image = 50.0 + 400.0 * disc + 20.0 * rng.standard_normal(TOY_SHAPE)
        effect = np.zeros(TOY_SHAPE, np.float32)
        if i >= controls:
            cx, cy = 6 + rng.integers(0, 2), 6 + rng.integers(0, 2)
            effect[cx:cx + 4, cy:cy + 3] = EFFECT
            write_image(root / "effect" / f"case_{i:02d}.nii.gz", effect, meta)
        write_image(root / ("control" if i < controls else "patient") / f"case_{i:02d}.nii.gz", image + effect, meta)
    return root


def _config(**overrides: object) -> VAGANConfig:
    values = {**MODEL, **overrides}
    return VAGANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return _write_toy(tmp_path_factory.mktemp("vagan") / "data")


@pytest.fixture(scope="module")
def trained(toy) -> tuple[Path, float]:
    """A VA-GAN trained for 200 steps on the toy, and the validation NCC of the untrained map."""
    torch.manual_seed(0)
    untrained = VAGAN(_config(), toy)
    before = validation_metrics(untrained, untrained.networks, torch.device("cpu"))["ncc"]
    run = toy.parent / "run"
    train("vagan", toy, run, TRAIN, MODEL)
    return run, before


class _CountingContext:
    """Just enough of the engine's StepContext to count critic batches and updates."""

    def __init__(self, family: VAGAN, step: int) -> None:
        self.family, self.step, self.batches, self.updates = family, step, 0, {"C": 0, "M": 0}

    def autocast(self):
        return contextlib.nullcontext()

    def trained(self, name: str) -> nn.Module:
        return self.family.networks[name]

    @contextlib.contextmanager
    def frozen(self, name: str):
        yield self.family.networks[name]

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        self.updates[name] += 1

    def next_batch(self) -> dict[str, torch.Tensor]:
        self.batches += 1
        return _stack([self.family.sample(1000 + self.batches)])


def _stack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


@pytest.mark.parametrize(("step", "critic_updates"), [(0, 5), (4, 5), (5, 2), (6, 2)])
def test_train_step_takes_one_fresh_batch_per_extra_critic_update(toy, step, critic_updates):
    family = VAGAN(_config(), toy)
    ctx = _CountingContext(family, step)
    losses = family.train_step(_stack([family.sample(0), family.sample(1)]), ctx)
    assert ctx.updates == {"C": critic_updates, "M": 1}
    assert ctx.batches == critic_updates - 1
    assert set(losses) == {"C_wasserstein", "C_gp", "M_adv", "M_l1"}


def test_samples_are_deterministic_whole_slices(toy):
    family = VAGAN(_config(), toy)
    first, again = family.sample(7), family.sample(7)
    assert family.patch_size == (16, 16)
    assert first["control"].shape == first["patient"].shape == (1, 16, 16)
    assert torch.equal(first["patient"], again["patient"])
    assert len(family.data.validation) == 2 and len(family.data.patients) == 4
    assert all(case.effect is not None for case in family.data.validation)


def test_a_resumed_run_equals_an_uninterrupted_one(toy, tmp_path):
    """The critic's extra batches come from sample indices too, so a resumed run draws what the straight one
    drew: same weights, bit for bit."""
    options = {**TRAIN, "batch_size": 2, "val_every": 0}
    torch.manual_seed(0)
    train("vagan", toy, tmp_path / "straight", {**options, "steps": 4}, MODEL)
    torch.manual_seed(0)
    train("vagan", toy, tmp_path / "split", {**options, "steps": 2}, MODEL)
    halfway = load_model(tmp_path / "split").weights["M"]
    train("vagan", toy, tmp_path / "split", {"steps": 4}, {}, resume=True)
    straight, split = (load_model(tmp_path / run).weights["M"] for run in ("straight", "split"))
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    assert not all(torch.equal(straight[k], halfway[k]) for k in straight)  # the last two steps changed M


@pytest.mark.slow
def test_a_tiny_2d_run_learns_the_map(trained):
    run, before = trained
    family = VAGAN(_config(), run.parent / "data")
    family.networks["M"].load_state_dict(load_model(run).weights["M"])
    after = validation_metrics(family, family.networks, torch.device("cpu"))["ncc"]
    assert abs(before) < 0.1
    assert after > 0.5, (before, after)


# -- the saliency baseline ----------------------------------------------------------------------------


def test_gradient_saliency_of_a_linear_classifier_is_minus_its_weights():
    weight = torch.arange(16.0).reshape(1, 4, 4)
    saliency = GradientSaliency(Linear(weight))
    maps = saliency(torch.randn(2, 1, 4, 4))
    assert torch.equal(maps, -weight.expand(2, 1, 4, 4))


# -- intensity normalisation ----------------------------------------------------------------------------


def test_the_disease_does_not_move_the_intensity_scale(tmp_path):
    """A subject's control and patient versions, normalised as VA-GAN does, agree wherever the disease
    changed nothing; otherwise the critic could tell the groups apart by their scale alone."""
    case = make_attribution_case((0, 20), (40, 48, 40), 4.0)
    meta = ImageMeta.from_affine(case.control.affine, case.control.mr.shape)
    write_image(tmp_path / "control" / "s.nii.gz", case.control.mr, meta)
    write_image(tmp_path / "patient" / "s.nii.gz", case.patient.mr, meta)
    unchanged = case.mr_effect == 0
    gaps = {}
    for region in IntensityRegion:
        data = AttributionData(tmp_path, (4.0, 4.0, 4.0), region=region, val_cases=0)
        control, patient = data.controls[0].image[0], data.patients[0].image[0]
        gaps[region] = float(np.abs(control - patient)[unchanged].max())
    assert gaps[IntensityRegion.IMAGE] < 1e-5
    # the MR body mask has no absolute threshold and moves little with the disease, so neither does its scale
    assert gaps[IntensityRegion.BODY] < 1e-3


@pytest.mark.parametrize("region", list(IntensityRegion))
def test_histogram_landmarks_are_fitted_on_the_training_images_and_travel_in_the_model(toy, region):
    """With ``mr_scaling: histogram`` the landmarks are learnt from the controls and training patients (held-out
    patients excluded), each over the voxels its scale comes from (the body with ``intensity_region: body``),
    and the exported model carries them to attribute; percentile scaling is as it was."""
    family = VAGAN(_config(mr_scaling=MRScaling.HISTOGRAM, intensity_region=region), toy)
    data = family.data
    held = {case.name for case in data.validation}
    training = [on_grid(data.grid, read_image(path)) for group in ("control", "patient")
                for path in sorted((toy / group).iterdir()) if path.name.removesuffix(".nii.gz") not in held]
    voxels = (lambda image: image[body_mask(image, modality="mr")]) if region is IntensityRegion.BODY else np.ravel
    expected = MRIntensity(scaling=MRScaling.HISTOGRAM).fit_landmarks(voxels(image) for image in training)
    assert len(training) == 10 and len(held) == 2
    assert data.intensity == expected
    assert np.abs(np.asarray(expected.landmarks) - np.linspace(-1.0, 1.0, LANDMARK_COUNT)).max() > 0.05
    stored = AttributionMetadata.from_json(json.loads(json.dumps(family.export().metadata.to_json())))
    assert stored.intensity == expected and stored.intensity_region == region.value
    default = VAGAN(_config(intensity_region=region), toy).data
    assert default.intensity == MRIntensity()  # percentile: nothing fitted


# -- medsynth attribute -------------------------------------------------------------------------------


def _run(*args: object):
    return CliRunner().invoke(app, ["attribute", *(str(a) for a in args), "--device", "cpu"])


def test_attribute_keeps_an_oblique_anisotropic_geometry(trained, tmp_path, oblique_affine, write_volume):
    run, _ = trained
    toy = run.parent / "data"
    affine = oblique_affine(spacing=(2.0, 2.6, 4.1), angles=(12.0, -8.0, 20.0))
    source = nib.load(toy / "patient" / "case_10.nii.gz").get_fdata().astype(np.float32)
    path = write_volume(tmp_path / "in" / "oblique.nii.gz", source, affine, qform_code=1, sform_code=2)
    result = _run(run, path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"oblique_map.nii.gz", "oblique_healthy.nii.gz", "oblique_overlay.png", "attribute_report.json"} <= written
    change, healthy = (nib.load(tmp_path / "out" / f"oblique_{k}.nii.gz") for k in ("map", "healthy"))
    for image in (change, healthy):
        assert image.shape == source.shape
        assert np.allclose(image.affine, affine, atol=1e-5)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 2
        assert image.get_data_dtype() == np.float32
    assert np.allclose(healthy.get_fdata(), source + change.get_fdata(), atol=1e-3)


def test_attribute_scores_held_out_patients_against_their_effects(trained, tmp_path):
    run, _ = trained
    toy = run.parent / "data"
    result = _run(run, toy / "patient", tmp_path / "out", "--effect", toy / "effect")
    assert result.exit_code == 0, result.output
    assert "NCC(map, -effect)" in result.stdout
    report = json.loads((tmp_path / "out" / "attribute_report.json").read_text())
    assert report["written"] == 6 and report["ncc"]["n"] == 6
    held_out = [report["ncc"]["cases"][c] for c in ("case_10", "case_11")]
    assert min(held_out) > 0.4  # the map adds back what the disease removed: positive NCC with −effect


def test_attribute_with_cpu_bf16_keeps_the_maps_within_bf16_rounding(trained, tmp_path):
    """``attribute --cpu-bf16``: the report says bfloat16 (float32 without it), the maps stay within bf16's
    rounding of float32's and are not identical (the autocast ran)."""
    run, _ = trained
    toy = run.parent / "data"
    maps = {}
    for name, extra in (("float32", []), ("bfloat16", ["--cpu-bf16"])):
        assert _run(run, toy / "patient" / "case_10.nii.gz", tmp_path / name, *extra).exit_code == 0
        (case,) = json.loads((tmp_path / name / "attribute_report.json").read_text())["cases"]
        assert case["precision"] == name
        maps[name] = nib.load(tmp_path / name / "case_10_map.nii.gz").get_fdata()
    scale = np.abs(maps["float32"]).max()
    difference = np.abs(maps["bfloat16"] - maps["float32"])
    assert 0 < difference.max() <= 0.05 * scale


def test_attribute_refuses_a_pix2pix_model(tmp_path, toy):
    kwargs = {"spatial_dims": 2, "channels": [4, 8], "strides": [2]}
    model = save_model(tmp_path / "model.safetensors", "pix2pix",
                       {"G": (NetworkSpec("medsynth.UNetGenerator", kwargs), UNetGenerator(**kwargs))}, {})
    result = _run(model, toy / "patient", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pix2pix" in lines[0] and "vagan" in lines[0]
    assert not (tmp_path / "out").exists()


def test_one_unreadable_file_fails_alone(trained, tmp_path):
    run, _ = trained
    toy = run.parent / "data"
    folder = tmp_path / "in"
    folder.mkdir()
    for case in ("case_06", "case_07"):
        (folder / f"{case}.nii.gz").write_bytes((toy / "patient" / f"{case}.nii.gz").read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not an image at all")
    result = _run(run, folder, tmp_path / "out")
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "out" / "attribute_report.json").read_text())
    status = {case["case"]: case["status"] for case in report["cases"]}
    assert status == {"broken": "failed", "case_06": "written", "case_07": "written"}
    assert (tmp_path / "out" / "case_07_map.nii.gz").is_file()
    assert not list((tmp_path / "out").glob("broken*"))
    rerun = _run(run, folder, tmp_path / "out")  # finished cases are skipped, the bad one fails again
    assert rerun.exit_code == 1
    assert {c["status"] for c in json.loads((tmp_path / "out" / "attribute_report.json").read_text())["cases"]
            if c["case"] != "broken"} == {"skipped"}
