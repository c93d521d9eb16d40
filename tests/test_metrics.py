"""SynthRAD image metrics, per-tissue errors, NCC and Dice against hand-computed values and an
independent transcription of the official SynthRAD2023/2025 evaluation procedures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from medsynth.errors import InputError
from medsynth.metrics import (
    bone_dice,
    dice_per_label,
    masked_ms_ssim,
    ncc,
    synthrad2023,
    synthrad2025,
    tissue_mae,
    tissue_metrics,
)
from medsynth.metrics.synthrad import _pool_like_official
from medsynth.metrics.tissue import tissue_classes, validation_scores

C1_2023 = (0.01 * 4024) ** 2
C1_2025 = (0.01 * 4095) ** 2


def _head(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy CT head (HU) — air, soft tissue, a skull shell, a sinus — and its body mask."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / s) ** 2 for g, s in zip(grid, (0.8, 0.9, 0.75), strict=True)))
    ct = np.full(shape, -1000.0)
    ct[radius < 1.0] = 40.0
    skull = (radius > 0.75) & (radius < 0.9)
    ct[skull] = 1000.0 + 300.0 * grid[0][skull]
    ct[np.sqrt((grid[0] - 0.3) ** 2 + grid[1] ** 2 + (grid[2] + 0.3) ** 2) < 0.15] = -950.0
    ct += rng.normal(0.0, 20.0, shape)
    return ct, radius < 1.05


def _prediction(ref: np.ndarray, seed: int) -> np.ndarray:
    """A plausible synthetic CT: biased, noisy, the sinus missed, some values beyond the HU range."""
    rng = np.random.default_rng(seed)
    pred = 0.97 * ref + 10.0 + rng.normal(0.0, 40.0, ref.shape)
    pred[(ref > -990) & (ref < -900)] = 30.0  # the sinus (-950 HU) predicted as soft tissue
    pred.flat[rng.choice(pred.size, 50, replace=False)] = 3600.0
    pred.flat[rng.choice(pred.size, 50, replace=False)] = -1500.0
    return pred


# --- an independent transcription of the official procedures --------------------------------------

def _official_2023(pred, ref, mask):
    low, high = -1024.0, 3000.0
    m = np.where(mask > 0, 1.0, 0.0)
    mae = np.sum(np.abs(ref * m - pred * m)) / m.sum()
    gt_c, pr_c = np.clip(ref, low, high), np.clip(pred, low, high)
    psnr = peak_signal_noise_ratio(gt_c[m == 1], pr_c[m == 1], data_range=high - low)
    gt_s = np.where(m == 0, low, gt_c) - low
    pr_s = np.where(m == 0, low, pr_c) - low
    _, ssim_full = structural_similarity(gt_s, pr_s, data_range=high - low, win_size=7, full=True)
    ssim = crop(ssim_full, 3)[crop(m, 3).astype(bool)].mean(dtype=np.float64)
    return {"mae": mae, "psnr": psnr, "ssim": ssim}


def _official_level(x, y, data_range, weight):
    n = 7**3
    cov_norm = n / (n - 1)
    from scipy.ndimage import uniform_filter

    ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
    vx = cov_norm * (uniform_filter(x * x, 7) - ux * ux)
    vy = cov_norm * (uniform_filter(y * y, 7) - uy * uy)
    vxy = cov_norm * (uniform_filter(x * y, 7) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sx, sy = np.clip(vx, 0, None) ** 0.5, np.clip(vy, 0, None) ** 0.5
    lum = np.clip((2 * ux * uy + c1) / (ux**2 + uy**2 + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    st = np.clip((vxy + c2 / 2) / (sx * sy + c2 / 2), 0, None)
    return lum**weight * con**weight * st**weight


def _official_2025(pred, ref, mask):
    low, high = -1024.0, 3071.0
    gt, pr = np.where(mask == 0, low, ref), np.where(mask == 0, low, pred)
    m = np.where(mask > 0, 1.0, 0.0)
    mae = np.sum(np.abs(gt * m - pr * m)) / m.sum()
    psnr = peak_signal_noise_ratio(np.clip(gt, low, high)[m == 1], np.clip(pr, low, high)[m == 1],
                                   data_range=high - low)
    gt = np.where(m == 0, low, np.clip(gt, low, high)) - low
    pr = np.where(m == 0, low, np.clip(pr, low, high)) - low
    pads = [(max((97 - d) // 2, 0), max(97 - d - (97 - d) // 2, 0)) for d in gt.shape]
    gt, pr, m = (np.pad(a, pads, mode="edge") for a in (gt, pr, m))
    values = []
    for weight in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333):
        level = _official_level(gt, pr, high - low, weight)
        values.append(crop(level, 3)[crop(m, 3).astype(bool)].mean(dtype=np.float64))
        gt, pr = (fftconvolve(a, np.ones((2, 2, 2)) / 8, mode="same") for a in (gt, pr))
        gt, pr, m = gt[::2, ::2, ::2], pr[::2, ::2, ::2], m[::2, ::2, ::2]
    return {"mae": mae, "psnr": psnr, "ms_ssim": np.prod(np.clip(values, 0, 1))}


# The official code runs on float32 (its SimpleITK cast), we on float64: 1e-4 covers that rounding.
# On float64 inputs both must agree to rounding of the summation order.
@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float32, 1e-4), (np.float64, 1e-9)])
@pytest.mark.parametrize(("shape", "seed"), [((48, 44, 40), 0), ((41, 56, 47), 1)])
def test_synthrad2023_matches_the_official_procedure(shape, seed, dtype, tolerance):
    ref, mask = _head(shape, seed)
    pred = _prediction(ref, seed + 10)
    ref, pred = ref.astype(dtype), pred.astype(dtype)
    ours, official = synthrad2023(pred, ref, mask), _official_2023(pred, ref, mask)
    assert set(ours) == {"mae", "psnr", "ssim"}
    for key in official:
        assert ours[key] == pytest.approx(official[key], abs=tolerance), key
    assert 0.3 < ours["ssim"] < 0.99  # a realistic, non-trivial operating point


@pytest.mark.parametrize(("shape", "seed"), [((40, 40, 40), 2), ((100, 45, 42), 3)])
def test_synthrad2025_matches_the_official_procedure(shape, seed):
    ref, mask = _head(shape, seed)
    pred = _prediction(ref, seed + 10)
    ours, official = synthrad2025(pred, ref, mask), _official_2025(pred, ref, mask)
    assert set(ours) == {"mae", "psnr", "ms_ssim"}
    for key in official:
        assert ours[key] == pytest.approx(official[key], abs=1e-9), key
    assert 0.3 < ours["ms_ssim"] < 0.999


def test_pooling_equals_the_official_fft_expression_and_a_hand_value():
    volume = np.random.default_rng(4).normal(size=(9, 8, 5))
    official = fftconvolve(volume, np.ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]
    np.testing.assert_allclose(_pool_like_official(volume), official, atol=1e-12)
    # Along axis 0 the blocks are {−1 (zero), 0}, {1, 2}; singleton axes halve twice: (1 + 2)/2/4.
    line = np.arange(4.0).reshape(4, 1, 1)
    np.testing.assert_allclose(_pool_like_official(line).ravel(), [0.0, 0.375])


# --- hand-computed cases -----------------------------------------------------------------------------

def test_identical_volumes_score_perfectly():
    ref, mask = _head((32, 32, 32), 5)
    scores = synthrad2023(ref, ref.copy(), mask)
    assert scores["mae"] == 0.0
    assert scores["psnr"] == math.inf
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    scores = synthrad2025(ref, ref.copy(), mask)
    assert (scores["mae"], scores["psnr"]) == (0.0, math.inf)
    assert scores["ms_ssim"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("offset", [7.0, 125.0])
def test_constant_offset_inside_the_mask(offset):
    ref, mask = _head((24, 24, 24), 6)
    ref = np.clip(ref, -1000.0, 2000.0)  # keep ref + offset inside both ranges: no clipping
    pred = np.where(mask, ref + offset, 500.0)  # outside the mask must not count
    scores = synthrad2023(pred, ref, mask)
    assert scores["mae"] == pytest.approx(offset, rel=1e-12)
    assert scores["psnr"] == pytest.approx(10 * math.log10(4024**2 / offset**2), rel=1e-12)
    scores = synthrad2025(pred, ref, mask)
    assert scores["mae"] == pytest.approx(offset, rel=1e-12)
    assert scores["psnr"] == pytest.approx(10 * math.log10(4095**2 / offset**2), rel=1e-12)


def test_ssim_of_constant_volumes_is_the_luminance_term():
    # No variance anywhere: SSIM = (2ab + C1)/(a² + b² + C1) with a, b the values shifted by +1024.
    ref, pred, mask = np.zeros((16, 16, 16)), np.full((16, 16, 16), 100.0), np.ones((16, 16, 16))
    expected = (2 * 1024 * 1124 + C1_2023) / (1024**2 + 1124**2 + C1_2023)
    assert synthrad2023(pred, ref, mask)["ssim"] == pytest.approx(expected, rel=1e-9)


def test_ms_ssim_level_is_the_weighted_luminance_term():
    ref, pred, mask = np.zeros((20, 20, 20)), np.full((20, 20, 20), 100.0), np.ones((20, 20, 20), bool)
    luminance = (2 * 1024 * 1124 + C1_2025) / (1024**2 + 1124**2 + C1_2025)
    low, high = -1024.0, 3071.0
    for weight in (1.0, 0.5):
        value = masked_ms_ssim(pred, ref, mask, low, high, weights=(weight,))
        assert value == pytest.approx(luminance**weight, rel=1e-9)


def test_values_beyond_the_range_are_clipped_for_psnr_and_ssim_but_not_for_mae():
    mask = np.ones((12, 12, 12), bool)
    ref, pred = np.full(mask.shape, 3500.0), np.full(mask.shape, 3000.0)
    ref[:6], pred[:6] = -1500.0, -1024.0  # below the range: both clip to -1024
    scores = synthrad2023(pred, ref, mask)
    assert scores["mae"] == pytest.approx((500.0 + 476.0) / 2)
    assert scores["psnr"] == math.inf and scores["ssim"] == pytest.approx(1.0)
    # The 2025 range ends at 3071: 3500 and 3000 differ by 71 HU there, over half the voxels.
    scores = synthrad2025(pred, ref, mask)
    assert scores["psnr"] == pytest.approx(10 * math.log10(4095**2 / (71.0**2 / 2)), rel=1e-12)


def test_voxels_outside_the_mask_do_not_change_any_metric():
    ref, mask = _head((30, 30, 30), 7)
    pred = _prediction(ref, 8)
    scrambled = np.where(mask, pred, np.random.default_rng(9).uniform(-3000, 4000, pred.shape))
    for metric in (synthrad2023, synthrad2025):
        assert metric(scrambled, ref, mask) == pytest.approx(metric(pred, ref, mask), rel=1e-12)


def test_unusable_inputs_raise_input_errors():
    volume = np.zeros((10, 10, 10))
    with pytest.raises(InputError, match="empty"):
        synthrad2023(volume, volume, np.zeros_like(volume))
    with pytest.raises(InputError, match="differ in shape"):
        synthrad2025(volume, volume[:9], np.ones_like(volume))
    with pytest.raises(InputError, match="at least 7 voxels"):
        synthrad2023(volume[:, :, :5], volume[:, :, :5], np.ones((10, 10, 5)))


# --- per-tissue errors and bone Dice ---------------------------------------------------------------

def test_tissue_classes_follow_the_reference_thresholds():
    ref = np.array([-1000.0, -200.5, -200.0, 0.0, 200.0, 200.5, 1500.0]).reshape(7, 1, 1)
    classes = tissue_classes(ref, np.ones_like(ref))
    assert classes["air"].ravel().tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert classes["soft"].ravel().tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert classes["bone"].ravel().tolist() == [0, 0, 0, 0, 0, 1, 1]


def test_tissue_mae_on_a_hand_built_volume():
    ref = np.zeros((4, 4, 4))
    ref[0], ref[1], ref[2:] = -1000.0, 40.0, 1000.0
    pred = ref + np.where(ref < -200, 10.0, np.where(ref > 200, -300.0, 20.0))
    pred[2, 0, 0] = 0.0  # one bone voxel predicted as soft tissue: error 1000
    mask = np.ones(ref.shape, bool)
    mask[3, 3, 3] = False  # outside: not counted
    maes = tissue_mae(pred, ref, mask)
    assert maes["mae_air"] == pytest.approx(10.0)
    assert maes["mae_soft"] == pytest.approx(20.0)
    assert maes["mae_bone"] == pytest.approx((30 * 300.0 + 1000.0) / 31)


def test_an_empty_tissue_class_is_nan():
    ref = np.full((3, 3, 3), 40.0)
    maes = tissue_mae(ref + 5.0, ref, np.ones(ref.shape))
    assert maes["mae_soft"] == pytest.approx(5.0)
    assert math.isnan(maes["mae_air"]) and math.isnan(maes["mae_bone"])


def test_bone_dice_on_a_hand_built_case():
    ref, pred = np.zeros((20, 1, 1)), np.zeros((20, 1, 1))
    ref[0:10], pred[5:15] = 1000.0, 1000.0  # 10 and 10 bone voxels, 5 shared
    mask = np.ones(ref.shape, bool)
    assert bone_dice(pred, ref, mask) == pytest.approx(0.5)
    mask[10:] = False  # pred bone inside the mask: 5..9, all shared; ref: 0..9
    assert bone_dice(pred, ref, mask) == pytest.approx(2 * 5 / (5 + 10))
    assert bone_dice(pred, np.zeros_like(ref), np.ones(ref.shape)) == 0.0
    assert math.isnan(bone_dice(np.zeros_like(ref), np.zeros_like(ref), np.ones(ref.shape)))
    assert set(tissue_metrics(pred, ref, mask)) == {"mae_air", "mae_soft", "mae_bone", "bone_dice"}



def test_validation_scores_average_cases_and_skip_a_case_without_bone():
    ref, mask = _head((24, 24, 24), 6)
    ref = np.clip(ref, -1000.0, 150.0)  # no bone in the reference ...
    no_bone = (ref + 20.0, ref, mask)  # ... nor in this prediction: its bone Dice is undefined
    offset = (np.where(mask, ref + 100.0, ref), np.where(mask, ref + 100.0, ref), mask)
    scores = validation_scores(iter([no_bone, offset]))
    assert scores["mae"] == pytest.approx(10.0)  # 20 HU and 0 HU inside the mask
    assert scores["psnr"] == math.inf  # the mean of a finite and an infinite PSNR
    assert math.isnan(bone_dice(*no_bone)) and scores["bone_dice"] == bone_dice(*offset)
    assert set(scores) == {"mae", "psnr", "ssim", "bone_dice"}

# --- NCC and Dice per label --------------------------------------------------------------------------

def test_ncc_of_affine_related_images_and_its_sign():
    a = np.random.default_rng(10).normal(size=(8, 8, 8))
    assert ncc(a, 2.0 * a + 3.0) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert math.isnan(ncc(a, np.ones_like(a)))


def test_ncc_uses_only_the_mask():
    a = np.arange(8.0)
    b = np.array([0.0, 2.0, 1.0, 3.0, 99.0, -99.0, 5.0, 0.0])
    mask = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # Inside: a = 0,1,2,3 (mean 1.5), b = 0,2,1,3 (mean 1.5): Σ = 2.25+0.25+0.25+2.25 ... by hand:
    # a−ā = −1.5,−.5,.5,1.5; b−b̄ = −1.5,.5,−.5,1.5; Σ(a−ā)(b−b̄) = 2.25−.25−.25+2.25 = 4; Σ(a−ā)² = 5.
    assert ncc(a, b, mask) == pytest.approx(4.0 / 5.0)


def test_dice_per_label():
    ref = np.array([0, 1, 1, 2, 2, 2, 0, 0])
    pred = np.array([0, 1, 2, 2, 2, 0, 0, 0])
    scores = dice_per_label(pred, ref, [1, 2, 3])
    assert scores[1] == pytest.approx(2 * 1 / (1 + 2))
    assert scores[2] == pytest.approx(2 * 2 / (3 + 3))
    assert math.isnan(scores[3])
