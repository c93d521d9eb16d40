"""The adversarial engine through the pix2pix family: learning, exact resume, model files, divergence, DDP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medsynth.engine.config import TrainConfig
from medsynth.engine.runtime import make_runtime
from medsynth.engine.trainer import Trainer, linear_decay, validation_metrics
from medsynth.errors import TrainingDiverged, UsageError
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig
from medsynth.modelfile import load_model
from medsynth.nets.generators import UNetGenerator, head_width
from medsynth.phantom.kinds import write_phantom
from medsynth.training import train

TINY_MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16, 32], "disc_channels": 8, "disc_layers": 2,
              "lr": 2e-3}


def tiny_train(**overrides: object) -> dict:
    return {"steps": 6, "batch_size": 2, "val_every": 0, "ckpt_every": 100, "preview_every": 100,
            "log_every": 1, "device": "cpu", **overrides}


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paired") / "data"
    write_phantom("paired", out, cases=4, shape=(32, 40, 32), spacing=5.0, seed=3)
    return out


def logged_losses(run: Path) -> dict[int, dict[str, float]]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {e["step"]: e["losses"] for e in entries if "losses" in e}


def test_linear_decay_is_constant_then_falls_to_zero() -> None:
    factor = linear_decay(100, 0.5)
    assert [factor(s) for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]


@pytest.mark.slow
def test_tiny_vox2vox_learns(paired: Path, tmp_path: Path) -> None:
    """Validation MAE after 40 steps is well below the untrained generator's."""
    torch.manual_seed(0)  # the untrained generator's MAE depends on its initialisation, not on earlier tests
    family = Pix2Pix(Pix2PixConfig(**TINY_MODEL, val_cases=1), paired)
    untrained = validation_metrics(family, family.networks, torch.device("cpu"))["mae"]
    config = TrainConfig(**{**tiny_train(steps=40), "device": "cpu"})
    trainer = Trainer(family, config, tmp_path / "run", make_runtime("cpu", False))
    result = trainer.fit()
    trained = result.validation["mae"] if result.validation else validation_metrics(
        family, trainer.export_networks(), torch.device("cpu"))["mae"]
    assert trained < 0.6 * untrained, (untrained, trained)
    assert (tmp_path / "run" / "model.safetensors").is_file()


class _InterruptAfter(Pix2Pix):
    """Sends itself SIGINT during a given step, as a user pressing Ctrl-C would."""

    interrupt_at = 2

    def train_step(self, batch, ctx):  # type: ignore[override]
        losses = super().train_step(batch, ctx)
        if ctx.step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return losses


@pytest.mark.slow
@pytest.mark.parametrize("fast", [{}, {"channels_last": True, "cpu_bf16": True}], ids=["fp32", "bf16"])
def test_resume_continues_exactly_as_the_uninterrupted_run(paired: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, fast: dict) -> None:
    straight = tmp_path / "straight"
    train("pix2pix", paired, straight, tiny_train(**fast), TINY_MODEL)

    import medsynth.families.pix2pix as module

    monkeypatch.setattr(module, "Pix2Pix", _InterruptAfter)
    interrupted = tmp_path / "interrupted"
    first = train("pix2pix", paired, interrupted, tiny_train(**fast), TINY_MODEL)
    assert first.interrupted and first.steps_done == 3
    assert not (interrupted / "model.safetensors").exists()
    monkeypatch.setattr(_InterruptAfter, "interrupt_at", -1)
    second = train("pix2pix", paired, interrupted, {}, {}, resume=True)
    assert second.steps_done == 6 and not second.interrupted

    expected, resumed = logged_losses(straight), logged_losses(interrupted)
    for step in range(1, 7):
        for name, value in expected[step].items():
            assert resumed[step][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, name)
    a, b = load_model(straight), load_model(interrupted)
    for key, tensor in a.weights["G"].items():
        torch.testing.assert_close(b.weights["G"][key], tensor, rtol=1e-5, atol=1e-6)


def test_model_file_describes_itself(paired: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train("pix2pix", paired, run, tiny_train(steps=2), TINY_MODEL)
    model = load_model(run)
    assert model.family == "pix2pix"
    assert set(model.networks) == {"G"}
    assert model.metadata["spatial_dims"] == 3 and model.metadata["patch_size"] == [16, 16, 16]
    assert model.metadata["spacing"] == pytest.approx([5.0, 5.0, 5.0])
    assert model.metadata["directions"]["mr2ct"]["target"]["modality"] == "ct"
    assert model.metadata["training_steps"] == 2 and len(model.metadata["data_fingerprint"]) == 16
    generator = model.build("G")
    assert not generator.training
    with pytest.raises(Exception, match="needs 'vagan'"):
        load_model(run, "vagan")


def test_existing_run_needs_resume_and_resume_without_a_checkpoint_starts_fresh(paired: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train("pix2pix", paired, run, tiny_train(steps=1), TINY_MODEL)
    with pytest.raises(UsageError, match="--resume"):
        train("pix2pix", paired, run, tiny_train(steps=1), TINY_MODEL)
    notes: list[str] = []
    result = train("pix2pix", paired, tmp_path / "fresh", tiny_train(steps=1), TINY_MODEL, resume=True,
                   note=notes.append)
    assert result.steps_done == 1 and len(notes) == 1 and "starting a fresh run" in notes[0]


def test_nonfinite_loss_stops_with_step_and_loss_named(paired: Path, tmp_path: Path) -> None:
    family = Pix2Pix(Pix2PixConfig(**TINY_MODEL), paired)
    with torch.no_grad():
        next(family.networks["G"].parameters()).fill_(float("nan"))
    trainer = Trainer(family, TrainConfig(**tiny_train()), tmp_path / "run", make_runtime("cpu", False))
    with pytest.raises(TrainingDiverged, match=r"step 1: loss '.*' is nan"):
        trainer.fit()


def test_samples_are_a_function_of_their_index(paired: Path) -> None:
    family = Pix2Pix(Pix2PixConfig(**TINY_MODEL), paired)
    a, b, c = family.sample(7), family.sample(7), family.sample(8)
    assert torch.equal(a["mr"], b["mr"]) and torch.equal(a["ct"], b["ct"])
    assert not torch.equal(a["mr"], c["mr"])
    assert a["mr"].shape == (1, 16, 16, 16)


def test_two_dimensional_pix2pix_trains_on_slices(paired: Path, tmp_path: Path) -> None:
    model = {**TINY_MODEL, "dims": 2, "patch_size": [32, 32]}
    result = train("pix2pix", paired, tmp_path / "run2d", tiny_train(steps=2), model)
    assert load_model(result.model_path).metadata["spatial_dims"] == 2


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_generator_never_normalises_its_single_output_channel(dims: int) -> None:
    def single_channel_norms(head_channels: int) -> int:
        generator = UNetGenerator(dims, channels=(8, 16, 32), strides=(2, 2), num_res_units=2,
                                  head_channels=head_channels)
        norms = [m for m in generator.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]
        return sum(m.num_features == 1 for m in norms)

    assert single_channel_norms(head_channels=0) >= 1  # MONAI's top layer, the reason for the head
    assert single_channel_norms(head_channels=head_width(None, (8, 16, 32), 2)) == 0


def test_generator_strides_and_discriminator_learning_rate_are_settings(paired: Path, tmp_path: Path) -> None:
    model = {**TINY_MODEL, "channels": [4, 8, 16], "strides": [1, 2], "lr": 1e-3, "lr_d": 2e-4}
    family = Pix2Pix(Pix2PixConfig(**model), paired)
    assert family.specs["G"].kwargs["strides"] == [1, 2]
    rates = {name: optimizer.param_groups[0]["lr"] for name, optimizer in family.optimizers().items()}
    assert rates == {"G": 1e-3, "D": 2e-4}
    assert Pix2PixConfig(channels=(8, 16, 32)).strides == (2, 2)
    with pytest.raises(UsageError, match="one value fewer"):
        Pix2PixConfig(channels=(8, 16, 32), strides=(2,))
    with pytest.raises(UsageError, match="multiple of 4"):
        Pix2PixConfig(patch_size=(18,), channels=(8, 16, 32), disc_layers=1)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed support")
def test_two_process_ddp_run_on_cpu(paired: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): both ranks train, rank 0 writes one model file."""
    run = tmp_path / "ddp"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               "-m", "medsynth", "train", "pix2pix", str(paired), "--out", str(run), "--steps", "3",
               "--batch-size", "1", "--patch-size", "16", "--device", "cpu", "--val-every", "0"]
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  channels: [8, 16, 32]\n  disc_channels: 8\n  disc_layers: 2\n")
    done = subprocess.run([*command, "--config", str(config)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    model = load_model(run)
    assert model.metadata["training_steps"] == 3
    assert not any(key.startswith("module.") for key in model.weights["G"])
    assert np.isfinite(np.array([v.float().abs().sum() for v in model.weights["G"].values()])).all()


def test_channels_last_is_chosen_by_convolution_dimensionality_when_asked() -> None:
    from torch import nn

    from medsynth.engine.runtime import Runtime
    from medsynth.engine.trainer import _memory_format

    cuda, cpu = Runtime(torch.device("cuda", 0), None), Runtime(torch.device("cpu"), None)
    asked = TrainConfig(channels_last=True)
    assert _memory_format(asked, cuda, nn.Sequential(nn.Conv3d(1, 1, 3))) is torch.channels_last_3d
    assert _memory_format(asked, cuda, nn.Sequential(nn.Conv2d(1, 1, 3))) is torch.channels_last
    assert _memory_format(asked, cpu, nn.Conv3d(1, 1, 3)) is torch.channels_last_3d  # oneDNN gains too
    assert _memory_format(TrainConfig(), cuda, nn.Conv3d(1, 1, 3)) is None


def test_cpu_bf16_is_asked_for_never_chosen() -> None:
    from medsynth.engine.runtime import pick_amp_dtype

    cpu = torch.device("cpu")
    assert pick_amp_dtype(cpu, amp=True) is None  # the CPU default stays fp32 whatever --amp says
    assert pick_amp_dtype(cpu, amp=False, cpu_bf16=True) is torch.bfloat16
    assert make_runtime("cpu", True, cpu_bf16=True).autocast().fast_dtype is torch.bfloat16


@pytest.mark.slow
def test_bf16_channels_last_training_follows_fp32(paired: Path, tmp_path: Path) -> None:
    """Same seed and batches: bf16 autocast in channels-last gives the fp32 run's losses within bf16's
    precision, and learns as fast. (The weights themselves part within a few steps, as two fp32 runs on two
    machines do; quality at equal steps is measured on real anatomy, docs/performance.md.)"""
    model = {**TINY_MODEL, "dims": 2, "patch_size": [32, 32], "context_slices": 1, "gan_weight": 0}
    runs = {}
    for name, fast in (("fp32", {}), ("bf16", {"channels_last": True, "cpu_bf16": True})):
        runs[name] = tmp_path / name
        train("pix2pix", paired, runs[name], tiny_train(steps=8, **fast), model)
    fp32, bf16 = logged_losses(runs["fp32"]), logged_losses(runs["bf16"])
    assert fp32[1]["G_L1"] == pytest.approx(bf16[1]["G_L1"], rel=0.01)  # one step: same weights, bf16 rounding
    assert fp32[8]["G_L1"] == pytest.approx(bf16[8]["G_L1"], rel=0.05)
    assert fp32[8]["G_L1"] < 0.8 * fp32[1]["G_L1"] and bf16[8]["G_L1"] < 0.8 * bf16[1]["G_L1"]


def test_ema_warms_up_then_holds_its_decay() -> None:
    from medsynth.engine.trainer import ema_with_warmup

    average = ema_with_warmup(0.999)
    zero, one = torch.zeros(1), torch.ones(1)
    assert float(average(zero, one, 0)) == pytest.approx(1 - 0.1)  # rate (1 + 0) / (10 + 0)
    assert float(average(zero, one, 10**6)) == pytest.approx(1 - 0.999)
