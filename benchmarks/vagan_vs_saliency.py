"""VA-GAN against the gradient-saliency baseline on the same held-out patients, by NCC(map, −effect).

    python benchmarks/vagan_vs_saliency.py DATA RUN [--model model.safetensors] [--baseline-steps 500]

DATA is an attribution data set (``medsynth phantom attribution DATA``), RUN a VA-GAN run trained on
it (``medsynth train vagan DATA --out RUN``). The held-out patients are the ones the run validated on
(same ``val_cases`` rule); the classifier is trained here on the run's training images, same grid
and normalisation. Prints both scores with the command that made them, and a reference that is
not a method: the mean effect of the *training* patients (which VA-GAN never sees) used as every
held-out patient's map. It shows how much of the score the disease's typical location alone earns
on the phantom, whose heads share one frame.

The baseline: a classifier f (``medsynth.Classifier``, the paper's baselines are of this kind) learns the logit
of "patient" with binary cross-entropy, BCE(f(c), 0) + BCE(f(x), 1), on the very images, preprocessing and
held-out split VA-GAN uses. Its map is the input gradient −∂f/∂x (``medsynth.inference.attribution.
GradientSaliency``), signed like VA-GAN's M(x): the direction in which the image looks *less* diseased, so it
correlates with −effect. It is a plain supervised loop, not an adversarial family, hence not on the engine (whose
validation runs without autograd), and it lives here, with the one comparison that trains it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from medsynth.data.attribution import AttributionData
from medsynth.data.intensity import MRScaling
from medsynth.data.patches import PatchSampler
from medsynth.data.splits import SplitPlan
from medsynth.data.volumes import IntensityRegion
from medsynth.engine.modes import eval_mode
from medsynth.families.vagan import VAGANConfig, draw_image, held_out_ncc
from medsynth.inference.attribution import GradientSaliency
from medsynth.inference.predictor import GridPredictor
from medsynth.metrics.report import summarise
from medsynth.modelfile import AttributionMetadata, ModelFile, load_model
from medsynth.nets.critic import Classifier


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


def held_out_data(data: Path, run: Path, model: ModelFile) -> AttributionData:
    """The data set as the run saw it: its grid, normalisation and held-out patients."""
    settings = yaml.safe_load((run / "config.yaml").read_text())["model"]
    spacing = AttributionMetadata.from_json(model.metadata, model.path).spacing
    return AttributionData(data, spacing, MRScaling(settings["mr_scaling"]),
                           IntensityRegion(settings["intensity_region"]), settings["val_cases"], settings["slab"])


def vagan_scores(attribution: AttributionData, model: ModelFile) -> dict[str, float]:
    """NCC(M(x), −effect) on the model grid for the run's held-out patients."""
    metadata = AttributionMetadata.from_json(model.metadata, model.path)
    generator = model.build(metadata.map_network)
    predictor = GridPredictor(metadata.spatial_dims, metadata.patch_size)
    return held_out_ncc(attribution, lambda image: predictor.volume(generator, image)[0].numpy())


def mean_effect_scores(attribution: AttributionData) -> dict[str, float]:
    """NCC of −(mean effect of the training patients) against each held-out patient's −effect."""
    effects = [case.effect for case in attribution.patients if case.effect is not None]
    if not effects or len({e.shape for e in effects + [c.effect for c in attribution.validation]}) > 1:
        return {}
    mean_effect = np.mean(effects, axis=0)
    return held_out_ncc(attribution, lambda image: -mean_effect)


def _row(name: str, scores: dict[str, float], seconds: float | None = None) -> str:
    summary = summarise(list(scores.values()))
    cases = "  ".join(f"{case} {value:.3f}" for case, value in sorted(scores.items()))
    took = "" if seconds is None else f"  ({seconds:.0f} s)"
    return f"{name:<11} {summary.mean:6.3f} ± {summary.sd:5.3f}   {cases}{took}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", default="model.safetensors", help="model file in RUN (or best.safetensors)")
    parser.add_argument("--baseline-steps", type=int, default=500)
    parser.add_argument("--baseline-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = yaml.safe_load((args.run / "config.yaml").read_text())["model"]
    model = load_model(args.run / args.model, "vagan")
    attribution = held_out_data(args.data, args.run, model)
    vagan = vagan_scores(attribution, model)
    started = time.perf_counter()
    baseline = train_saliency_baseline(args.data, steps=args.baseline_steps, dims=settings["dims"],
                                       batch_size=args.baseline_batch_size, val_cases=settings["val_cases"],
                                       slab=settings["slab"], region=IntensityRegion(settings["intensity_region"]),
                                       seed=args.seed)
    seconds = time.perf_counter() - started
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"held-out patients: {len(vagan)}; NCC(map, -effect), mean ± sd (sample), then per case")
    print(_row("VA-GAN", vagan))
    print(_row("saliency", baseline.ncc, seconds))
    reference = mean_effect_scores(attribution)
    if reference:
        print(_row("mean effect", reference) + "  (reference: training patients' ground truth, not a method)")
    print(f"classifier: final batch loss {baseline.loss:.3f}, accuracy {baseline.accuracy:.2f}")


if __name__ == "__main__":
    main()
