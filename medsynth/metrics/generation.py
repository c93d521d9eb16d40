"""How good and how new generated CT slices are (SPEC §5, generation).

- HU-histogram Wasserstein distance inside the body: W₁ between the HU distributions of the body
  pixels of generated and real slices (1-HU bins over the CT range), in HU.
- Memorisation: for each generated slice the nearest real slice by SSIM; near-copies are flagged.
- FID and KID over features of a user-supplied extractor (nothing is downloaded).
- Anatomy: body outline, lungs and spine statistics of generated against real slices
  (``medsynth/metrics/anatomy.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric
from scipy.stats import wasserstein_distance

from medsynth.data.intensity import CTIntensity
from medsynth.data.slices import BODY_THRESHOLD_HU, SliceSet, slice_body_mask
from medsynth.errors import InputError
from medsynth.io.image import CT_RANGE
from medsynth.metrics.anatomy import anatomy_values, compare_anatomy

_HU_BINS = np.arange(CT_RANGE[0], CT_RANGE[1] + 1, dtype=np.float64)
SSIM_WINDOW = 7
SSIM_K = (0.01, 0.03)
MEMORISATION_SIZE = 128


def body_hu_histogram(slices_hu: Iterable[np.ndarray], threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Counts of body-pixel HU values (rounded, clipped to [-1024, 3071]) over all slices, one bin per HU."""
    counts = np.zeros(len(_HU_BINS), dtype=np.int64)
    for hu in slices_hu:
        values = np.clip(np.rint(hu[slice_body_mask(hu, threshold)]), *CT_RANGE).astype(np.int64)
        counts += np.bincount(values - CT_RANGE[0], minlength=len(_HU_BINS))
    return counts


def histogram_wasserstein(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """W₁ = ∫|F_a(h) − F_b(h)| dh between two HU histograms (HU); NaN if either is empty."""
    if counts_a.sum() == 0 or counts_b.sum() == 0:
        return float("nan")
    return float(wasserstein_distance(_HU_BINS, _HU_BINS, counts_a, counts_b))


def _local_mean(x: torch.Tensor) -> torch.Tensor:
    """Means over the 7×7 windows inside each image (N, H, W), as two 1D passes."""
    x = F.avg_pool2d(x[:, None], (SSIM_WINDOW, 1), stride=1)
    return F.avg_pool2d(x, (1, SSIM_WINDOW), stride=1)[:, 0]


def ssim_to_references(images: torch.Tensor, references: torch.Tensor, data_range: float = 2.0,
                       chunk: int = 256) -> torch.Tensor:
    """Mean SSIM of every image (G, H, W) against every reference (N, H, W): a (G, N) matrix.

    SSIM = (2μ_xμ_y + C₁)(2σ_xy + C₂) / ((μ_x² + μ_y² + C₁)(σ_x² + σ_y² + C₂)), C_k = (K_k·L)²,
    K = (0.01, 0.03), L = ``data_range``, with means and (sample) covariances over 7×7 uniform windows,
    averaged over the window positions inside the image: the values of scikit-image's default SSIM.
    """
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    correction = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)  # sample, not population, covariance
    images, references = images.float(), references.float()
    mu_x = _local_mean(images)
    var_x = (_local_mean(images**2) - mu_x**2) * correction
    columns = []
    for block in references.split(chunk):
        mu_y = _local_mean(block)
        var_y = (_local_mean(block**2) - mu_y**2) * correction
        rows = []
        for g in range(len(images)):
            cov = (_local_mean(images[g][None] * block) - mu_x[g] * mu_y) * correction
            ssim = ((2 * mu_x[g] * mu_y + c1) * (2 * cov + c2)
                    / ((mu_x[g] ** 2 + mu_y**2 + c1) * (var_x[g] + var_y + c2)))
            rows.append(ssim.mean(dim=(1, 2)))
        columns.append(torch.stack(rows))
    return torch.cat(columns, dim=1)


def _at_most(slices: torch.Tensor, size: int) -> torch.Tensor:
    if slices.shape[-1] <= size:
        return slices.float()
    return F.interpolate(slices[:, None].float(), size=(size, size), mode="bilinear", antialias=True)[:, 0]


def memorisation(generated: torch.Tensor, real: torch.Tensor, real_sources: list[str], copy_ssim: float = 0.95,
                 baseline_queries: int = 128) -> dict[str, float | int | list[int]]:
    """Nearest real slice by SSIM for each generated slice (N, H, W in [-1, 1]), against a baseline.

    The baseline is, for up to ``baseline_queries`` real slices, the nearest real slice from *another*
    file (neighbouring slices of one volume are near-duplicates by construction). Generated slices
    much closer to the data than different subjects are to each other, or at SSIM ≥ ``copy_ssim``, are
    likely copies. Slices are compared at 128² at most: enough to see a copy, and quick.
    """
    generated, real = _at_most(generated, MEMORISATION_SIZE), _at_most(real, MEMORISATION_SIZE)
    nearest = ssim_to_references(generated, real).max(dim=1).values
    queries = np.unique(np.linspace(0, len(real) - 1, min(baseline_queries, len(real))).astype(int))
    sources = np.asarray(real_sources)
    between = ssim_to_references(real[queries], real)
    between[torch.from_numpy(sources[queries][:, None] == sources[None, :])] = -1.0
    baseline = between.max(dim=1).values
    baseline = baseline[baseline > -1.0]
    copies = torch.nonzero(nearest >= copy_ssim).flatten().tolist()
    return {
        "nn_ssim_mean": float(nearest.mean()),
        "nn_ssim_max": float(nearest.max()),
        "real_nn_ssim_mean": float(baseline.mean()) if len(baseline) else float("nan"),
        "real_nn_ssim_max": float(baseline.max()) if len(baseline) else float("nan"),
        "copy_ssim": copy_ssim,
        "near_copies": len(copies),
        "near_copy_indices": copies,
    }


def load_feature_extractor(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """A TorchScript feature extractor from a local file (inputs (B, 3, H, W) in [0, 1], outputs (B, F, …))."""
    try:
        extractor = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as error:
        raise InputError(f"{path}: is not a readable TorchScript file ({type(error).__name__}); export the "
                         "feature extractor with torch.jit.script or torch.jit.trace and torch.jit.save.") from error
    return extractor.eval()


@torch.no_grad()
def extract_features(extractor: torch.nn.Module, images: torch.Tensor, device: torch.device,
                     batch_size: int = 32) -> torch.Tensor:
    """Features (N, F) of slices (N, H, W) in [-1, 1], shown to the extractor as grey RGB in [0, 1]."""
    features = []
    for block in images.split(batch_size):
        rgb = ((block[:, None].float() + 1.0) / 2.0).expand(-1, 3, -1, -1).to(device)
        features.append(extractor(rgb).flatten(1).double().cpu())
    return torch.cat(features)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_rΣ_f)^½) between feature sets (MONAI)."""
    return float(FIDMetric()(fake.double(), real.double()))


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with the cubic kernel k(a, b) = (aᵀb / d + 1)³:

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn).
    """
    x, y = x.double(), y.double()
    m, n, d = len(x), len(y), x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance: mean and standard deviation of MMD²_u over random subsets.

    With both sets no larger than ``subset_size`` there is one subset, all of them (std 0).
    """
    if min(len(real), len(fake)) < 2:
        raise InputError("KID needs at least 2 real and 2 generated slices.")
    size = min(subset_size, len(real), len(fake))
    if size == len(real) == len(fake):
        return polynomial_mmd2(real, fake), 0.0
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                              fake[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def generation_metrics(generated_hu: np.ndarray, real: SliceSet, intensity: CTIntensity,
                       threshold: float = BODY_THRESHOLD_HU, copy_ssim: float = 0.95,
                       extractor: torch.nn.Module | None = None, device: torch.device | None = None,
                       ) -> dict[str, Any]:
    """All generation metrics of slices (N, R, R) in HU against real slices at the same resolution.

    A flat mapping of numbers, plus ``anatomy``: per anatomical statistic, generated and real mean and
    standard deviation and their W₁ distance (``compare_anatomy``).
    """
    if generated_hu.shape[1:] != real.hu.shape[1:]:
        raise InputError(f"generated slices {generated_hu.shape[1:]} and real slices {real.hu.shape[1:]} differ "
                         "in size; read the real data at the model's resolution.")
    fake = torch.from_numpy(intensity.normalise(generated_hu))
    data = torch.from_numpy(intensity.normalise(real.hu))
    metrics: dict[str, Any] = {
        "generated_slices": len(fake),
        "real_slices": len(data),
        "hu_wasserstein": histogram_wasserstein(body_hu_histogram(generated_hu, threshold),
                                                body_hu_histogram(real.hu, threshold)),
        **memorisation(fake, data, real.sources, copy_ssim),
        "anatomy": compare_anatomy(anatomy_values(generated_hu, threshold), anatomy_values(real.hu, threshold)),
    }
    if extractor is not None:
        device = device or torch.device("cpu")
        real_features = extract_features(extractor, data, device)
        fake_features = extract_features(extractor, fake, device)
        metrics["fid"] = fid(real_features, fake_features)
        metrics["kid"], metrics["kid_std"] = kid(real_features, fake_features)
    return metrics
