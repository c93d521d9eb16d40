"""The adversarial training loop: one for every family.

Per step: draw a batch (by index, so resume and DDP are exact), let the family update its networks,
check the losses are finite, update EMAs and learning rates, then log, preview, validate and
checkpoint on their cadences. SIGINT/SIGTERM stop after the current step with a checkpoint saved.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Sampler

from medsynth.engine.checkpoint import CHECKPOINT_NAME, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from medsynth.engine.config import TrainConfig
from medsynth.engine.context import StepContext
from medsynth.engine.family import Family, Validation
from medsynth.engine.logbook import Logbook, write_validation
from medsynth.engine.modes import evaluating
from medsynth.engine.runtime import Runtime, SharedCpus, barrier
from medsynth.errors import TrainingDiverged, UsageError
from medsynth.inference.predictor import channels_last_format
from medsynth.io.modelpaths import MODEL_FILENAME
from medsynth.modelfile import save_model

BEST_MODEL_FILENAME = "best.safetensors"


@dataclass
class TrainResult:
    """How a run ended."""

    run_dir: Path
    steps_done: int
    interrupted: bool = False
    model_path: Path | None = None
    last_losses: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    is_main: bool = True  # False on torchrun ranks other than 0, which report nothing
    warnings: list[str] = field(default_factory=list)  # the family's verdict on the final validation


class _FamilySamples(Dataset):
    def __init__(self, family: Family) -> None:
        self.family = family

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.family.sample(index)


class _BatchIndices(Sampler[int]):
    """Sample indices of batch ``b`` on rank ``r``: a fixed arithmetic sequence, never random."""

    def __init__(self, first_batch: int, batch_size: int, rank: int, world_size: int) -> None:
        self.first_batch, self.batch_size, self.rank, self.world_size = first_batch, batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        batch = self.first_batch
        while True:
            start = (batch * self.world_size + self.rank) * self.batch_size
            yield from range(start, start + self.batch_size)
            batch += 1


def ema_with_warmup(decay: float):
    """EMA update whose decay grows as min(decay, (1 + n) / (10 + n)) with the number of updates n.

    Without the warm-up a short run would export mostly the initial weights (0.999 needs thousands
    of steps to forget them).
    """

    def average(averaged: Tensor, current: Tensor, updates: Tensor | int) -> Tensor:
        n = float(updates)
        rate = min(decay, (1.0 + n) / (10.0 + n))
        return rate * averaged + (1.0 - rate) * current

    return average


def linear_decay(steps: int, decay_start: float):
    """LR factor: 1 until ``decay_start·steps``, then linearly to 0 at ``steps`` (pix2pix/CycleGAN)."""
    start = int(decay_start * steps)

    def factor(step: int) -> float:
        if step < start:
            return 1.0
        return max(0.0, (steps - step) / max(1, steps - start))

    return factor


def _memory_format(config: TrainConfig, runtime: Runtime, networks: nn.Module) -> torch.memory_format | None:
    """channels_last(_3d) for runs that ask for it, by the dimensionality of the networks' convolutions."""
    return channels_last_format(networks) if config.channels_last else None


def validation_metrics(family: Family, networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, float]:
    """``family.validate`` as the engine runs it: every network in evaluation mode under inference mode, each
    module's mode restored afterwards (also for callers outside a run, e.g. an untrained family's score)."""
    with evaluating(networks.values()):
        return family.validate(networks, device)


def validation_table(family: Family, networks: Mapping[str, nn.Module], device: torch.device) -> Validation:
    """``family.validate_cases`` (the means and the per-case rows) as the engine runs it, see
    :func:`validation_metrics`; what training and a validation-only run (``train --val``) write."""
    with evaluating(networks.values()):
        return family.validate_cases(networks, device)


def preview_panels(family: Family, batch: dict[str, Tensor], networks: Mapping[str, nn.Module]
                   ) -> list[list[np.ndarray]]:
    """``family.preview`` as the engine runs it (see :func:`validation_metrics`)."""
    with evaluating(networks.values()):
        return family.preview(batch, networks)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop reads between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, training still works
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs ``family`` for ``config.steps`` steps in ``run_dir`` on ``runtime``."""

    def __init__(self, family: Family, config: TrainConfig, run_dir: Path, runtime: Runtime) -> None:
        self.family, self.config, self.run_dir, self.runtime = family, config, Path(run_dir), runtime
        family.networks.to(runtime.device)
        self.memory_format = _memory_format(config, runtime, family.networks)
        if self.memory_format is not None:
            family.networks.to(memory_format=self.memory_format)
        self.trained = self._wrap_for_ddp(family.networks)
        self.optimizers = family.optimizers()
        decay = linear_decay(config.steps, config.decay_start)
        self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, decay) for n, o in self.optimizers.items()}
        self.scalers = {n: torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
                        for n in self.optimizers}
        self.ema = {n: AveragedModel(family.networks[n], avg_fn=ema_with_warmup(config.ema_decay),
                                     use_buffers=True) for n in family.ema_networks}
        self.step = 0
        self.batches_drawn = 0
        self.best: dict[str, float] = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / CHECKPOINT_NAME

    def _wrap_for_ddp(self, networks: nn.ModuleDict) -> dict[str, nn.Module]:
        if not self.runtime.distributed:
            return dict(networks.items())
        device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
        return {name: DistributedDataParallel(net, device_ids=device_ids) if any(
            p.requires_grad for p in net.parameters()) else net for name, net in networks.items()}

    def export_networks(self) -> dict[str, nn.Module]:
        """The networks a model file holds: the EMA copy where one is kept."""
        return {n: (self.ema[n].module if n in self.ema else net) for n, net in self.family.networks.items()}

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "batches_drawn": self.batches_drawn,
            "networks": {n: net.state_dict() for n, net in self.family.networks.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "ema": {n: e.state_dict() for n, e in self.ema.items()},
            "family": self.family.state_dict_extra(),
            "best": dict(self.best),
            "rng": capture_rng(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for name, net in self.family.networks.items():
            net.load_state_dict(state["networks"][name])
        for group in ("optimizers", "schedulers", "scalers", "ema"):
            for name, obj in getattr(self, group).items():
                if group == "scalers" and (not state[group][name] or not obj.is_enabled()):
                    continue  # resumed on another device: a loss scaler starts anew where fp16 begins
                obj.load_state_dict(state[group][name])
        self.family.load_state_dict_extra(state["family"])
        self.step, self.batches_drawn, self.best = state["step"], state["batches_drawn"], dict(state["best"])
        restore_rng(state["rng"])

    def save_checkpoint(self) -> None:
        if self.runtime.is_main:
            save_checkpoint(self.checkpoint_path, self.state())
        barrier(self.runtime)

    def resume(self) -> None:
        """Continue from the last checkpoint; one at or past ``steps`` leaves nothing to train (see :meth:`fit`)."""
        state = load_checkpoint(self.checkpoint_path)
        if state["step"] > self.config.steps:
            raise UsageError(f"{self.run_dir}: already trained {state['step']} steps; raise --steps to go on.")
        self.load_state(state)
        # The schedule follows this run's --steps, which may exceed the interrupted run's: the
        # optimisers must not keep the learning rate the old schedule had reached.
        for name, scheduler in self.schedulers.items():
            for group, base in zip(self.optimizers[name].param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base * scheduler.lr_lambdas[0](self.step)

    # -- data --------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[dict[str, Tensor]]:
        workers = self.config.workers if self.config.workers >= 0 else (2 if self.runtime.device.type == "cuda" else 0)
        sampler = _BatchIndices(self.batches_drawn, self.config.batch_size, self.runtime.rank, self.runtime.world_size)
        loader = DataLoader(
            _FamilySamples(self.family), batch_size=self.config.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.runtime.device.type == "cuda", persistent_workers=workers > 0,
            # An own generator keeps the loader from consuming the global RNG that the checkpoint restores.
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        for batch in loader:
            self.batches_drawn += 1
            yield {k: self._to_device(v) for k, v in batch.items()}

    def _advance_schedules(self) -> None:
        with warnings.catch_warnings():
            # The schedule follows the engine's step, not each optimiser's own count, so an optimiser
            # that did not step (CycleGAN's segmenter-only warm-up, an fp16 overflow skipped by its
            # scaler) keeps its place in it; torch's warning about that order does not apply here.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                    category=UserWarning)
            for scheduler in self.schedulers.values():
                scheduler.step()

    def _to_device(self, tensor: Tensor) -> Tensor:
        tensor = tensor.to(self.runtime.device, non_blocking=True)
        if self.memory_format is not None and tensor.ndim == (5 if self.memory_format is
                                                              torch.channels_last_3d else 4):
            tensor = tensor.contiguous(memory_format=self.memory_format)
        return tensor

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        batches = self._batches()
        context = StepContext(self.runtime, self.family.networks, self.trained, self.optimizers, self.scalers,
                              lambda: next(batches))
        result = TrainResult(self.run_dir, self.step, is_main=self.runtime.is_main)
        trained_here = self.step < self.config.steps
        with (Logbook(self.run_dir, self.runtime, self.config.steps, self.step) as logbook, _StopRequest() as stop,
              SharedCpus(self.runtime.device) as cpus):
            while self.step < self.config.steps:
                cpus.follow()
                batch = next(batches)
                context.step = self.step
                self.family.networks.train()
                losses = self._finite(self.family.train_step(batch, context))
                for name, ema in self.ema.items():
                    ema.update_parameters(self.family.networks[name])
                self._advance_schedules()
                self.step += 1
                result.last_losses = losses
                logbook.losses(self.step, losses, self._learning_rates(), every=self.config.log_every)
                self._cadenced(batch, logbook, result)
                if self._stop_everywhere(stop.requested):
                    self.save_checkpoint()
                    result.interrupted = True
                    break
        result.steps_done = self.step
        if not result.interrupted:
            if trained_here:
                self.save_checkpoint()
            # Also when the run had finished training but was killed before its model file was written.
            result.model_path = self.write_model(self.run_dir / MODEL_FILENAME)
        result.best = dict(self.best)
        return result

    def _cadenced(self, batch: dict[str, Tensor], logbook: Logbook, result: TrainResult) -> None:
        last = self.step == self.config.steps
        if self.runtime.is_main and (self.step % self.config.preview_every == 0 or last):
            logbook.preview(self.step, preview_panels(self.family, batch, self.export_networks()))
        if self.config.val_every and (self.step % self.config.val_every == 0 or last):
            result.validation = self._validate(logbook)
        if self.step % self.config.ckpt_every == 0 and not last:
            self.save_checkpoint()

    def _validate(self, logbook: Logbook) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.runtime.is_main:
            validation = validation_table(self.family, self.export_networks(), self.runtime.device)
            metrics = validation.means
            logbook.validation(self.step, metrics)
            if metrics:
                write_validation(self.run_dir, self.step, validation, "training")
            self._keep_best(metrics)
        barrier(self.runtime)
        return metrics

    def _keep_best(self, metrics: dict[str, float]) -> None:
        if self.family.best_metric is None or self.family.best_metric[0] not in metrics:
            return
        name, lower_is_better = self.family.best_metric
        value = metrics[name]
        previous = self.best.get(name)
        if previous is None or (value < previous if lower_is_better else value > previous):
            self.best = {name: value, "step": float(self.step)}
            self.write_model(self.run_dir / BEST_MODEL_FILENAME)

    def write_model(self, path: Path) -> Path | None:
        if not self.runtime.is_main:
            return None
        export = self.family.export()
        networks = self.export_networks()
        metadata = {**export.document(), "training_steps": self.step}
        return save_model(path, self.family.name,
                          {n: (self.family.specs[n], networks[n]) for n in export.networks}, metadata)

    def _finite(self, losses: dict[str, Tensor]) -> dict[str, float]:
        values = {name: float(value.detach()) for name, value in losses.items()}
        for name, value in values.items():
            if not torch.isfinite(torch.tensor(value)):
                kept = f"the last checkpoint ({self.checkpoint_path}) is kept" if self.checkpoint_path.exists() \
                    else "no checkpoint had been saved yet"
                raise TrainingDiverged(f"training diverged at step {self.step + 1}: loss '{name}' is {value}; "
                                       f"{kept}. Lower the learning rate or turn AMP off (--no-amp).")
        return values

    def _learning_rates(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def _stop_everywhere(self, requested: bool) -> bool:
        """A signal may reach one rank first: all ranks stop at the same step, or none does."""
        if not self.runtime.distributed:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.runtime.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)


def run_training(family: Family, config: TrainConfig, run_dir: Path, runtime: Runtime,
                 resume: bool = False) -> TrainResult:
    """Train ``family`` in ``run_dir`` (resuming from its last checkpoint when asked) and write the model."""
    trainer = Trainer(family, config, run_dir, runtime)
    if resume:
        trainer.resume()
    started = time.perf_counter()
    result = trainer.fit()
    result.seconds = time.perf_counter() - started
    return result
