"""Anatomical statistics of CT slices (``medsynth/metrics/anatomy.py``) on hand-drawn slices.

The synthetic chest is drawn from rectangles in RAS order (axis 0 left-right, axis 1 posterior→anterior),
so every area is a pixel count done by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.metrics.anatomy import STATISTICS, anatomy_values, compare_anatomy, slice_anatomy

AIR, LUNG, SOFT, BONE, MARROW = -1000.0, -850.0, 40.0, 700.0, 100.0


def chest(size: int = 64) -> np.ndarray:
    """Body x 12..52, y 17..47 (40 x 30 = 1200 px); lungs x 16..26 and 38..48, y 28..40 (10 x 12 = 120 px
    each); a 4 x 4 vertebra (16 px) at x 30..34, y 20..24: on the midline (centre x 32), posterior."""
    hu = np.full((size, size), AIR, dtype=np.float32)
    hu[12:52, 17:47] = SOFT
    hu[16:26, 28:40] = LUNG
    hu[38:48, 28:40] = LUNG
    hu[30:34, 20:24] = BONE
    return hu


def test_a_drawn_chest_has_outline_two_lungs_and_spine_with_hand_counted_areas():
    a = slice_anatomy(chest())
    assert a.body_area == pytest.approx(1200 / 64**2)
    assert a.body_solidity == pytest.approx(1.0)  # a rectangle is its own convex hull
    assert a.lung_area == pytest.approx(240 / 1200)
    assert a.bone_area == pytest.approx(16 / 1200)
    assert a.lung_components == 2
    assert a.body_outline and a.two_lungs and a.spine and a.anatomy_complete


def test_left_right_mirroring_changes_nothing_and_front_back_flipping_loses_the_spine():
    hu = chest()
    assert slice_anatomy(hu[::-1]) == slice_anatomy(hu)
    flipped = slice_anatomy(hu[:, ::-1])  # the vertebra is now anterior
    assert not flipped.spine and flipped.two_lungs and flipped.body_outline


def test_one_lung_across_the_midline_is_not_two_lungs():
    hu = chest()
    hu[16:48, 28:40] = LUNG
    a = slice_anatomy(hu)
    assert a.lung_components == 1 and not a.two_lungs and not a.anatomy_complete


def test_lungs_touching_across_a_one_pixel_junction_still_count_as_two():
    hu = chest()
    hu[26:38, 34] = LUNG  # a one-pixel line joining them
    a = slice_anatomy(hu)
    assert a.lung_components == 2 and a.two_lungs


def test_two_lungs_on_one_side_are_not_a_pair():
    hu = chest()
    hu[38:48, 28:40] = SOFT  # no lung on one side; the other split in two, front and back
    hu[16:26, 33:35] = SOFT
    a = slice_anatomy(hu)
    assert a.lung_components >= 2 and not a.two_lungs


def test_a_lateral_bone_or_a_bone_slab_is_not_a_spine():
    lateral = chest()
    lateral[30:34, 20:24] = SOFT
    lateral[13:17, 20:24] = BONE  # a rib-like bone at the body's side
    assert not slice_anatomy(lateral).spine
    slab = chest()
    slab[12:52, 17:24] = BONE  # 280 px: over 15 % of the body
    assert not slice_anatomy(slab).spine


def test_a_vertebra_with_marrow_inside_counts_with_its_hole_filled():
    hu = chest()
    hu[28:36, 18:26] = BONE  # 8 x 8 cortex ring around 6 x 6 marrow below the bone threshold
    hu[29:35, 19:25] = MARROW
    assert slice_anatomy(hu).spine
    assert slice_anatomy(hu).bone_area == pytest.approx((64 - 36) / 1200)


@pytest.mark.parametrize("case", ["fills the slice", "two fragments", "ragged"])
def test_blobs_without_a_body_outline(case):
    hu = np.full((64, 64), AIR, dtype=np.float32)
    if case == "fills the slice":
        hu[:] = SOFT
    elif case == "two fragments":
        hu[4:24, 4:60] = SOFT
        hu[40:60, 4:60] = SOFT
    else:  # a comb: solidity 0.5
        hu[8:56, 8:16] = SOFT
        hu[8:56:2, 16:56] = SOFT
    assert not slice_anatomy(hu).body_outline


def test_an_empty_slice_scores_zero_and_a_volume_is_refused():
    a = slice_anatomy(np.full((32, 32), AIR))
    assert (a.body_area, a.lung_components, a.body_outline, a.spine) == (0.0, 0, False, False)
    with pytest.raises(ValueError, match="2D"):
        slice_anatomy(np.zeros((4, 4, 4)))


def test_compare_anatomy_gives_means_sds_and_w1_by_hand():
    no_spine = chest()
    no_spine[30:34, 20:24] = SOFT
    generated = anatomy_values([chest(), chest(), chest(), no_spine])
    real = anatomy_values([chest()] * 3)
    assert set(generated) == set(STATISTICS)
    report = compare_anatomy(generated, real)
    assert report["spine"]["generated"] == pytest.approx(0.75) and report["spine"]["real"] == 1.0
    assert report["spine"]["generated_sd"] == pytest.approx(np.std([1, 1, 1, 0]))
    assert report["spine"]["w1"] == pytest.approx(0.25)  # W1 of two Bernoulli samples: |p - q|
    assert report["two_lungs"]["w1"] == 0.0
    assert report["bone_area"]["w1"] == pytest.approx(0.25 * 16 / 1200)
