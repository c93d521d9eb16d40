"""The baseline VA-GAN is compared with: gradient saliency of a control-vs-patient classifier.

A classifier f (``medsynth.Classifier``, the paper's baselines are of this kind) learns the logit of
"patient" with binary cross-entropy, BCE(f(c), 0) + BCE(f(x), 1), on the very images, preprocessing
and held-out split VA-GAN uses. Its map is the input gradient −∂f/∂x (Simonyan et al., 2014), signed
like VA-GAN's M(x): the direction in which the image looks *less* diseased, so it correlates with
−effect. It is a plain supervised loop, not an adversarial family, hence not on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsynth.data.attribution import AttributionData
from medsynth.data.patches import PatchSampler
from medsynth.data.splits import SplitPlan
from medsynth.data.volumes import IntensityRegion
from medsynth.engine.modes import eval_mode
from medsynth.families.vagan import VAGANConfig, draw_image, held_out_ncc
from medsynth.inference.predictor import GridPredictor
from medsynth.nets.critic import Classifier


class GradientSaliency(nn.Module):
    """−∂f/∂x of a classifier's patient logit, image by image, wrapped as a network for the grid predictor."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            # Images are scored independently (eval mode), so the gradient of the sum is per image.
            (gradient,) = torch.autograd.grad(self.classifier(x).sum(), x)
        return -gradient


@dataclass
class SaliencyResult:
    """Per held-out patient: NCC(saliency, −effect), and the final training loss and accuracy."""

    ncc: dict[str, float]
    loss: float
    accuracy: float


def _batch(rng: np.random.Generator, data: AttributionData, patch_size: Sequence[int], size: int,
           flip_axes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Half controls (label 0), half patients (label 1)."""
    labels = np.arange(size) % 2
    sampler = PatchSampler(tuple(patch_size), flip_axes=tuple(flip_axes))
    images = [draw_image(rng, data.patients if label else data.controls, sampler) for label in labels]
    return torch.from_numpy(np.stack(images)), torch.from_numpy(labels.astype(np.float32))


def train_saliency_baseline(data: Path, steps: int = 500, dims: int = 2, batch_size: int = 8, lr: float = 1e-3,
                            channels: Sequence[int] = (16, 32, 64, 128), val_cases: int = -1, slab: float = 1.0,
                            region: IntensityRegion = IntensityRegion.IMAGE, seed: int = 0,
                            device: str = "cpu", split: SplitPlan | None = None) -> SaliencyResult:
    """Train the classifier for ``steps`` Adam steps and score its saliency maps on the held-out patients.

    ``val_cases``, ``slab`` and ``region`` mean what they mean in :class:`VAGANConfig`; give the VA-GAN
    run's values to compare on equal terms; ``split`` (default: seeded by ``seed``) that run's split
    (``SplitPlan(path=RUN/split.json)`` reuses its held-out patients).
    """
    config = VAGANConfig(dims=dims, val_cases=val_cases, slab=slab, intensity_region=region, seed=seed)
    attribution = AttributionData(data, None, config.mr_scaling, region, val_cases, slab, dims,
                                  split or SplitPlan(seed=seed, write=False))
    patch_size = attribution.whole_size(dims, 2 ** (len(channels) - 1))
    torch.manual_seed(seed)
    classifier = Classifier(dims, channels=channels).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        images, labels = (t.to(device) for t in _batch(rng, attribution, patch_size, batch_size, config.flip_axes))
        logits = classifier(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    accuracy = float(((logits > 0).float() == labels).float().mean())
    saliency, predictor = GradientSaliency(classifier), GridPredictor(dims, patch_size)
    with eval_mode([classifier]):
        scores = held_out_ncc(attribution, lambda image: predictor.volume(saliency, image)[0].cpu().numpy())
    return SaliencyResult(scores, float(loss.detach()), accuracy)
