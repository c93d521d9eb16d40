"""Evaluation mode, owned by the engine: families never switch their networks' modes themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(networks: Iterable[nn.Module]) -> Iterator[None]:
    """Run the block with ``networks`` in evaluation mode, autograd untouched (for input gradients such as
    saliency maps). On leaving, every module gets back the mode it had (module by module, so a part kept
    in another mode than its parent stays so), also when the block raises."""
    networks = list(networks)
    previous = [(module, module.training) for network in networks for module in network.modules()]
    try:
        for network in networks:
            network.eval()
        yield
    finally:
        for module, training in previous:
            module.training = training


@contextmanager
def evaluating(networks: Iterable[nn.Module]) -> Iterator[None]:
    """Run the block with ``networks`` in evaluation mode (:func:`eval_mode`) under ``torch.inference_mode()``.

    Batch normalisation uses (and does not update) its running statistics, dropout is off and no autograd
    graph is built; on leaving, every module gets back the mode it had, also when the block raises.
    """
    with eval_mode(networks), torch.inference_mode():
        yield
