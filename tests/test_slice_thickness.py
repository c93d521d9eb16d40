"""Slice-thickness augmentation (``thick_slices``): the weights are those of a thicker acquisition
interpolated back onto the thin grid (checked against a brute-force simulation), the slab keeps the 2.5D
layout, and the option draws nothing when it is off."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.augment import SliceThickness, thick_slice_margin, thick_slice_weights
from medsynth.data.patches import PatchDraw, cut_slab
from medsynth.errors import UsageError
from medsynth.families.pix2pix import Pix2PixConfig


def brute_force_thick(profile: np.ndarray, factor: float, phase: float, k: int) -> np.ndarray:
    """Thin slices -(k+m)..k+m of ``profile`` (piecewise constant along z, 1,000 sub-steps per slice),
    box-averaged over slices ``factor`` thick centred at (phase + j)·factor, read back at -k..k by linear
    interpolation between the thick slices' centres."""
    m = (profile.size - 1) // 2 - k
    fine = np.linspace(-(k + m) - 0.5, k + m + 0.5, 1000 * profile.size, endpoint=False) + 0.0005
    values = profile[np.clip(np.floor(fine + 0.5).astype(int) + k + m, 0, profile.size - 1)]
    centres = (phase + np.arange(-20, 21)) * factor
    centres = centres[(centres - factor / 2 >= fine[0]) & (centres + factor / 2 <= fine[-1])]
    thick = [values[np.abs(fine - c) < factor / 2].mean() for c in centres]
    return np.interp(np.arange(-k, k + 1), centres, thick)


@pytest.mark.parametrize(("factor", "phase", "k"), [(2.0, 0.0, 2), (2.0, 0.5, 2), (1.5, 0.3, 1), (2.5, 0.8, 0),
                                                    (1.7, 0.0, 3)])
def test_weights_are_a_thicker_acquisition_read_back_on_the_thin_grid(factor, phase, k):
    weights = thick_slice_weights(factor, phase, k)
    m = thick_slice_margin(factor)
    assert weights.shape == (2 * k + 1, 2 * (k + m) + 1)
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights >= 0).all()
    profile = np.random.default_rng(0).random(2 * (k + m) + 1)
    assert np.allclose(weights @ profile, brute_force_thick(profile, factor, phase, k), atol=2e-3)
    ramp = np.arange(-(k + m), k + m + 1, dtype=float)  # a trend along z stays where it was (to < 0.05 slice)
    assert np.allclose(weights @ ramp, np.arange(-k, k + 1), atol=0.05)


def test_factor_one_is_the_thin_slab_and_a_thin_structure_is_smeared():
    assert np.allclose(thick_slice_weights(1.0, 0.0, 2)[:, thick_slice_margin(1.0):-thick_slice_margin(1.0)],
                       np.eye(5))
    impulse = np.zeros(2 * (2 + thick_slice_margin(2.0)) + 1)
    impulse[impulse.size // 2] = 1.0  # e.g. a rib crossing the centre slice
    seen = thick_slice_weights(2.0, 0.25, 2) @ impulse
    assert seen.max() < 0.5 and np.count_nonzero(seen > 0.05) >= 2


def test_slab_keeps_the_25d_layout_and_is_off_by_default():
    rng = np.random.default_rng(3)
    volume = rng.random((2, 10, 10, 14)).astype(np.float32)  # two MR contrasts
    thickness = SliceThickness(1.0, (2.0, 2.0))
    draw = PatchDraw((0, 0, 7), ())
    wide = cut_slab(volume, draw, (10, 10), -1.0, 2 + thickness.margin)
    slab = thickness.apply(wide, 2, 2, (2.0, 0.0))
    weights = thick_slice_weights(2.0, 0.0, 2)
    expected = np.einsum("os,cs...->co...", weights, wide.reshape(2, -1, 10, 10)).reshape(10, 10, 10)
    assert slab.shape == (10, 10, 10) and slab.dtype == np.float32 and np.allclose(slab, expected)
    assert np.array_equal(thickness.apply(wide, 2, 2, None), cut_slab(volume, draw, (10, 10), -1.0, 2))

    off, generator = SliceThickness(), np.random.default_rng(5)
    state = generator.bit_generator.state
    assert off.margin == 0 and off.draw(generator) is None and generator.bit_generator.state == state
    assert Pix2PixConfig().thick_slices == 0.0


def test_thick_slices_is_a_probability_for_2d_models():
    with pytest.raises(UsageError, match="thick_slices"):
        Pix2PixConfig(dims=3, patch_size=(32, 32, 32), thick_slices=0.5)
    with pytest.raises(UsageError, match="thick_slices"):
        Pix2PixConfig(dims=2, patch_size=(32, 32), thick_slices=1.5)
    with pytest.raises(ValueError, match="slice thickness"):
        SliceThickness(0.5, (0.5, 2.0))
