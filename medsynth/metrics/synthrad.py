"""Image similarity of a synthetic CT to its reference, as the SynthRAD challenges score it.

Both protocols reproduce the order of operations of the challenges' official evaluation code
(SynthRAD2023 ``image_metrics.py``; SynthRAD2025 ``evaluation/image_metrics.py``), because a
figure is only comparable with the leaderboards when clipping, masking and cropping happen in the
same order. Arrays are computed in float64; values are Hounsfield units, ``mask`` is the body mask.

Notation: ``y`` is the reference CT, ``ŷ`` the prediction, ``m`` the binary mask, ``Ω = {m = 1}``,
``|Ω|`` its voxel count, ``[lo, hi]`` the protocol's HU range and ``R = hi − lo`` its data range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medsynth.errors import InputError

SYNTHRAD2023_RANGE = (-1024.0, 3000.0)
SYNTHRAD2025_RANGE = (-1024.0, 3071.0)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
# Half a window: the SSIM map is averaged only where the 7³ window lies inside the volume.
_EDGE = (SSIM_WINDOW - 1) // 2
# 97 -> 49 -> 25 -> 13 -> 7 voxels: the smallest size whose fifth MS-SSIM level still holds a window.
MS_SSIM_MIN_SIZE = 97


def synthrad2023(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR and SSIM by the SynthRAD2023 protocol (range [-1024, 3000] HU, R = 4024).

    - MAE  = Σ m·|y − ŷ| / Σ m, on raw (unclipped) HU.
    - PSNR = 10·log10(R² / MSE), MSE = mean over Ω of (clip(y) − clip(ŷ))²; +inf when MSE = 0.
    - SSIM: clip both to the range, set voxels outside Ω to −1024, add 1024, compute the SSIM map
      with a 7³ uniform window (:func:`ssim_map`), and average it over Ω after cropping 3 voxels
      from every edge of both the map and the mask.
    """
    pred, ref, mask = _checked(pred, ref, mask, min_size=SSIM_WINDOW)
    low, high = SYNTHRAD2023_RANGE
    return {
        "mae": masked_mae(pred, ref, mask),
        "psnr": masked_psnr(pred, ref, mask, low, high),
        "ssim": _masked_ssim(pred, ref, mask, low, high),
    }


def synthrad2025(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR and masked MS-SSIM by the SynthRAD2025 protocol (range [-1024, 3071] HU, R = 4095).

    Voxels outside Ω are first set to −1024 in both volumes; then MAE and PSNR are those of
    :func:`synthrad2023` with this range, and MS-SSIM is :func:`masked_ms_ssim`.
    """
    pred, ref, mask = _checked(pred, ref, mask, min_size=1)
    low, high = SYNTHRAD2025_RANGE
    pred, ref = np.where(mask, pred, low), np.where(mask, ref, low)
    return {
        "mae": masked_mae(pred, ref, mask),
        "psnr": masked_psnr(pred, ref, mask, low, high),
        "ms_ssim": masked_ms_ssim(pred, ref, mask, low, high),
    }


def masked_mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the mask: Σ m·|y − ŷ| / Σ m."""
    return float(np.abs(ref - pred)[mask].mean())


def masked_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, low: float, high: float) -> float:
    """PSNR = 10·log10((high − low)² / MSE) of the clipped volumes over the mask; +inf if they agree."""
    diff = np.clip(ref[mask], low, high) - np.clip(pred[mask], low, high)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10((high - low) ** 2 / mse))


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM map of Wang et al. (2004) with a 7³ uniform window, as ``skimage`` computes it.

    SSIM = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), C1 = (K1·R)²,
    C2 = (K2·R)², with local means from a uniform filter (reflected borders) and the sample
    (co)variances, i.e. scaled by N/(N − 1) for N = 7³ voxels in the window.
    """
    mu_x, mu_y, var_x, var_y, cov = _local_statistics(x, y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    return numerator / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


def masked_ms_ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, low: float, high: float,
                   weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> float:
    """Masked multi-scale SSIM as in the SynthRAD2025 evaluation code.

    Both volumes are clipped to [low, high], set to ``low`` outside the mask and shifted by −low.
    At level j (weight wj) the map is (L·C·S)^wj, with each term clipped at 0:
    L = (2μxμy + C1)/(μx² + μy² + C1), C = (2σxσy + C2)/(σx² + σy² + C2),
    S = (σxy + C3)/(σxσy + C3), C3 = C2/2; its mean over the mask, 3 edge voxels cropped, is
    clipped to [0, 1], and MS-SSIM is the product of these level values.

    Between levels the images are mean-pooled over 2×2×2 blocks and the mask is subsampled (every
    second voxel), as the official code does (:func:`_pool_like_official`). Volumes smaller than 97
    voxels along an axis are edge-padded to 97 first, also as the official code does: this keeps
    all five levels and their weights (97 → 49 → 25 → 13 → 7, one 7³ window at the coarsest
    level) instead of renormalising fewer levels, so small volumes score on the challenge's terms.
    A level whose cropped mask is empty makes the result NaN.
    """
    data_range = high - low
    x = np.where(mask, np.clip(ref, low, high), low) - low
    y = np.where(mask, np.clip(pred, low, high), low) - low
    x, y, mask = (_pad_to(a, MS_SSIM_MIN_SIZE) for a in (x, y, mask))
    level_values = []
    for level, weight in enumerate(weights):
        if level > 0:
            x, y, mask = _pool_like_official(x), _pool_like_official(y), mask[::2, ::2, ::2]
        level_map = _weighted_ssim_terms(x, y, data_range, weight)
        level_values.append(_interior_mean(level_map, mask))
    return float(np.prod(np.clip(level_values, 0.0, 1.0)))


def _masked_ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, low: float, high: float) -> float:
    # Order as in the official code: clip, then air outside the mask, then shift to be non-negative.
    x = np.where(mask, np.clip(ref, low, high), low) - low
    y = np.where(mask, np.clip(pred, low, high), low) - low
    return _interior_mean(ssim_map(x, y, high - low), mask)


def _local_statistics(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local means, sample variances and sample covariance over a 7³ uniform window."""
    n = SSIM_WINDOW**x.ndim
    sample = n / (n - 1.0)
    mu_x = ndi.uniform_filter(x, SSIM_WINDOW)
    mu_y = ndi.uniform_filter(y, SSIM_WINDOW)
    var_x = sample * (ndi.uniform_filter(x * x, SSIM_WINDOW) - mu_x * mu_x)
    var_y = sample * (ndi.uniform_filter(y * y, SSIM_WINDOW) - mu_y * mu_y)
    cov = sample * (ndi.uniform_filter(x * y, SSIM_WINDOW) - mu_x * mu_y)
    return mu_x, mu_y, var_x, var_y, cov


def _weighted_ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float, weight: float) -> np.ndarray:
    """(L·C·S)^weight per voxel, each term clipped at 0 (see :func:`masked_ms_ssim`)."""
    mu_x, mu_y, var_x, var_y, cov = _local_statistics(x, y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    c3 = c2 / 2.0
    # Rounding can leave a tiny negative variance in flat regions; its square root would be NaN.
    sd_x, sd_y = np.sqrt(np.maximum(var_x, 0.0)), np.sqrt(np.maximum(var_y, 0.0))
    luminance = np.maximum((2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1), 0.0)
    contrast = np.maximum((2.0 * sd_x * sd_y + c2) / (var_x + var_y + c2), 0.0)
    structure = np.maximum((cov + c3) / (sd_x * sd_y + c3), 0.0)
    return (luminance * contrast * structure) ** weight


def _interior_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` over the mask after cropping the half-window strip at every edge; NaN if empty."""
    interior = tuple(slice(_EDGE, size - _EDGE) for size in values.shape)
    selected = values[interior][mask[interior]]
    return float(selected.mean(dtype=np.float64)) if selected.size else float("nan")


def _pool_like_official(volume: np.ndarray) -> np.ndarray:
    """2×2×2 mean pooling aligned as the official ``fftconvolve(v, ones(2,2,2)/8, 'same')[::2, ::2, ::2]``.

    That expression averages, along each axis, voxels {2i − 1, 2i} with a zero before the first
    voxel, giving ceil(n/2) samples. Padding one zero in front and averaging aligned pairs is the
    same sum without the FFT (and its rounding noise).
    """
    out_shape = tuple((n + 1) // 2 for n in volume.shape)
    padded = np.pad(volume, [(1, 0)] * volume.ndim)
    padded = padded[tuple(slice(0, 2 * k) for k in out_shape)]
    blocks = padded.reshape([dim for k in out_shape for dim in (k, 2)])
    return blocks.mean(axis=tuple(range(1, 2 * volume.ndim, 2)))


def _pad_to(volume: np.ndarray, size: int) -> np.ndarray:
    """Edge-pad every axis shorter than ``size`` to ``size``, split as evenly as possible (rest after)."""
    missing = [max(size - n, 0) for n in volume.shape]
    if not any(missing):
        return volume
    return np.pad(volume, [(m // 2, m - m // 2) for m in missing], mode="edge")


def _checked(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray,
             min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 copies of the volumes and a boolean mask (m > 0), after checking they can be scored."""
    pred, ref, mask = np.asarray(pred), np.asarray(ref), np.asarray(mask)
    if not pred.shape == ref.shape == mask.shape:
        raise InputError(f"prediction {pred.shape}, reference {ref.shape} and mask {mask.shape} differ in "
                         "shape; resample them onto one grid.")
    if ref.ndim != 3 or min(ref.shape) < min_size:
        raise InputError(f"volumes of shape {ref.shape} cannot be scored; 3D volumes of at least "
                         f"{min_size} voxels along every axis are needed.")
    mask = mask > 0
    if not mask.any():
        raise InputError("the mask is empty; give a mask that covers the body.")
    return pred.astype(np.float64), ref.astype(np.float64), mask
