"""The contract between a model family and the engine.

A family owns its networks, optimisers, training samples and one ``train_step``; the engine owns
everything around them (device, AMP, DDP, EMA, schedules, checkpoints, logging, validation cadence
and evaluation mode: :meth:`Family.validate` and :meth:`Family.preview` run in evaluation mode under
``torch.inference_mode``, see :func:`medsynth.engine.modes.evaluating`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from medsynth.data.splits import Split
from medsynth.engine.context import StepContext
from medsynth.io.image import Volume
from medsynth.modelfile import ModelMetadata, NetworkSpec
from medsynth.nets.registry import build_network


@dataclass
class ModelExport:
    """What goes into the model file: which networks (by name) and the metadata inference needs."""

    networks: tuple[str, ...]
    metadata: ModelMetadata | dict[str, Any] = field(default_factory=dict)  # typed; empty for a toy family

    def document(self) -> dict[str, Any]:
        """The metadata as the model file's JSON document."""
        return self.metadata.to_json() if isinstance(self.metadata, ModelMetadata) else dict(self.metadata)


@dataclass
class Validation:
    """One validation: the metrics (means over the held-out cases, as logged) and, for families that
    validate case by case, one row per case (``{"case": id, metric: value, ...}``, in case order)."""

    means: dict[str, float]
    cases: list[dict[str, Any]] = field(default_factory=list)


class Family(ABC):
    """A model family: networks + optimisers + samples + one training step."""

    name: ClassVar[str]
    #: networks whose exponential moving average the engine keeps and exports in their place
    ema_networks: ClassVar[tuple[str, ...]] = ()
    #: validation metric that decides the best model, and whether lower is better
    best_metric: ClassVar[tuple[str, bool] | None] = None
    #: engine settings this family wants by default (e.g. FastGAN's batch 8); config files and options win
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.networks = nn.ModuleDict()
        self.specs: dict[str, NetworkSpec] = {}
        self.split: Split | None = None  # the run's train/validation split (RUN/split.json)

    def add_network(self, name: str, builder: str, **kwargs: Any) -> nn.Module:
        """Build a registered network and remember how, so the model file can rebuild it exactly."""
        network = build_network(builder, kwargs)
        self.networks[name] = network
        self.specs[name] = NetworkSpec(builder, kwargs)
        return network

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per independently updated group, by name."""

    def adam_per_network(self, names: tuple[str, ...], lr: float, betas: tuple[float, ...]
                         ) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimiser per named network, the GAN papers' usual set-up."""
        return {name: torch.optim.Adam(self.networks[name].parameters(), lr=lr, betas=tuple(betas))
                for name in names}

    @abstractmethod
    def sample(self, index: int) -> dict[str, Tensor]:
        """Training sample number ``index``: deterministic in ``index`` so that resume and DDP are exact."""

    @abstractmethod
    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Update the networks on ``batch``; return the named losses (scalars) for logging."""

    @abstractmethod
    def export(self) -> ModelExport:
        """The networks and metadata of the model file."""

    def validate(self, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
        """Metrics on held-out data with the networks that would be exported (EMA where kept)."""
        return {}

    def validate_cases(self, networks: Mapping[str, nn.Module], device: torch.device) -> Validation:
        """:meth:`validate` with its per-case rows, for the run's validation table; families that score case by
        case override this (and derive :meth:`validate` from it). Default: the means, no rows."""
        return Validation(self.validate(networks, device))

    def verdict(self, metrics: Mapping[str, float]) -> list[str]:
        """Warnings a user must see about the final validation ``metrics`` (e.g. a model no better than a
        trivial baseline); none by default."""
        return []

    def validation_references(self) -> Iterator[tuple[str, list[Volume], Volume, np.ndarray | None]]:
        """Paired validation cases as read — (id, MR volumes in channel order, reference CT, mask or None) — on
        which a translation family's spread is calibrated after training (services/calibrate.py); none by
        default."""
        return iter(())

    def preview(self, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]) -> list[list[np.ndarray]]:
        """Rows of 2D panels (uint8 grey or RGB) showing what the networks do on ``batch``."""
        return []

    def state_dict_extra(self) -> dict[str, Any]:
        """Family state outside networks and optimisers (e.g. image pools) for checkpoints."""
        return {}

    def load_state_dict_extra(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict_extra` saved."""
