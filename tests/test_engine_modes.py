"""The engine owns evaluation mode: validation and previews run in eval mode under inference_mode, and
training resumes in train mode with batch-norm statistics untouched by them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medsynth.engine.config import TrainConfig
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, ModelExport
from medsynth.engine.modes import evaluating
from medsynth.engine.runtime import make_runtime
from medsynth.engine.trainer import Trainer


def _batch_norms(network: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]


class _Recorder(Family):
    """A one-network family with batch norm and dropout that records what it sees in each phase."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.add_network("G", "monai.UNet", spatial_dims=2, in_channels=1, out_channels=1, channels=[4, 8],
                         strides=[2], norm="batch", dropout=0.5)
        self.seen: list[tuple[str, bool, bool]] = []  # (phase, any module training, inference mode)
        self.stats_changed: list[bool] = []

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": torch.optim.SGD(self.networks["G"].parameters(), lr=0.01)}

    def sample(self, index: int) -> dict[str, Tensor]:
        return {"x": torch.from_numpy(np.random.default_rng(index).normal(size=(1, 8, 8)).astype(np.float32))}

    def _record(self, phase: str, network: nn.Module) -> None:
        self.seen.append((phase, any(m.training for m in network.modules()), torch.is_inference_mode_enabled()))

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        self._record("train", self.networks["G"])
        loss = ctx.trained("G")(batch["x"]).square().mean()
        ctx.optimize("G", loss)
        return {"G": loss}

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        self._record("validate", networks["G"])
        before = [bn.running_mean.clone() for bn in _batch_norms(networks["G"])]
        networks["G"](torch.randn(2, 1, 8, 8) * 5 + 3)  # far from the training statistics
        after = [bn.running_mean for bn in _batch_norms(networks["G"])]
        self.stats_changed.append(any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)))
        return {}

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        self._record("preview", networks["G"])
        return []

    def export(self) -> ModelExport:
        return ModelExport(networks=("G",))


def test_validation_and_previews_run_in_eval_mode_and_training_resumes_in_train_mode(tmp_path: Path) -> None:
    family = _Recorder()
    config = TrainConfig(steps=4, batch_size=2, val_every=2, preview_every=2, ckpt_every=100, log_every=1,
                         device="cpu")
    Trainer(family, config, tmp_path / "run", make_runtime("cpu", False)).fit()
    phases = [phase for phase, _, _ in family.seen]
    assert phases == ["train", "train", "preview", "validate", "train", "train", "preview", "validate"]
    assert all(training and not inference for phase, training, inference in family.seen if phase == "train")
    assert all(not training and inference for phase, training, inference in family.seen if phase != "train")
    assert family.stats_changed == [False, False]
    assert all(m.training for m in family.networks.modules())


def test_evaluating_restores_each_module_mode_also_after_an_error() -> None:
    network = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    network[1].eval()  # a part held in evaluation mode inside a training network stays so
    other = nn.Linear(3, 3).eval()
    with pytest.raises(RuntimeError), evaluating([network, other]):
        assert not any(m.training for m in [*network.modules(), *other.modules()])
        assert torch.is_inference_mode_enabled()
        raise RuntimeError("validation failed")
    assert [m.training for m in network.modules()] == [True, True, False, True]
    assert not other.training
    assert not torch.is_inference_mode_enabled()
