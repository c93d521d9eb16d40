"""What a family's ``train_step`` may use from the engine: autocast, optimiser steps, networks, batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from medsynth.engine.runtime import Runtime


class StepContext:
    """The engine's services for one training step.

    ``trained(name)`` is the network to use for forward passes whose gradients update it (wrapped in
    DistributedDataParallel under torchrun); ``frozen(name)`` yields the plain network with gradients
    switched off, for passes that only carry gradients *through* it (e.g. D while G learns).
    """

    def __init__(
        self,
        runtime: Runtime,
        networks: Mapping[str, nn.Module],
        trained: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        scalers: Mapping[str, torch.amp.GradScaler],
        next_batch: Callable[[], dict[str, Tensor]],
    ) -> None:
        self.runtime = runtime
        self._networks = networks
        self._trained = trained
        self._optimizers = optimizers
        self._scalers = scalers
        self._next_batch = next_batch
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes (bf16/fp16 on CUDA, nothing on the CPU)."""
        return self.runtime.autocast()

    def trained(self, name: str) -> nn.Module:
        return self._trained[name]

    @contextlib.contextmanager
    def frozen(self, name: str) -> Iterator[nn.Module]:
        network = self._networks[name]
        flags = [p.requires_grad for p in network.parameters()]
        network.requires_grad_(False)
        try:
            yield network
        finally:
            for parameter, flag in zip(network.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)

    def optimize(self, name: str, loss: Tensor) -> None:
        """One update of optimiser ``name``: zero grads, (scaled) backward, step, scaler update."""
        optimizer = self._optimizers[name]
        scaler = self._scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def next_batch(self) -> dict[str, Tensor]:
        """Another training batch, for schedules that take several critic steps per generator step."""
        return self._next_batch()
