"""Body masks of synthetic CT and MR heads: the ellipsoid exactly, holes filled, specks and padding gone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from medsynth.data.bodymask import body_mask, fill_holes
from medsynth.errors import InputError

SHAPE = (40, 44, 36)


def _ellipsoid(shape=SHAPE, semi_axes=(15.0, 17.0, 13.0)) -> np.ndarray:
    centre = [(n - 1) / 2 for n in shape]
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes, strict=True)) <= 1.0


def _cavity() -> np.ndarray:
    """An air pocket enclosed inside the ellipsoid."""
    cavity = np.zeros(SHAPE, bool)
    cavity[17:22, 19:24, 15:20] = True
    return cavity


def _ct_head(rng: np.random.Generator) -> np.ndarray:
    ct = np.where(_ellipsoid(), 40.0, -1000.0) + rng.normal(0.0, 20.0, SHAPE)
    ct[_cavity()] = -1000.0 + rng.normal(0.0, 20.0, int(_cavity().sum()))
    for corner in [(1, 1, 1), (37, 2, 3), (2, 40, 33)]:  # noise specks and a stray bright voxel pair
        ct[corner] = 800.0
    ct[36:38, 40, 2] = 300.0
    return ct


def test_ct_mask_is_the_filled_ellipsoid_without_specks():
    mask = body_mask(_ct_head(np.random.default_rng(0)), dilation=0)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, _ellipsoid())


def test_dilation_adds_a_ball_of_the_given_radius():
    mask = body_mask(_ct_head(np.random.default_rng(1)), dilation=2)
    distance_outside = ndi.distance_transform_edt(~_ellipsoid())
    np.testing.assert_array_equal(mask, distance_outside <= 2.0)


def test_mr_mask_includes_dark_bone_and_ignores_rician_background():
    rng = np.random.default_rng(2)
    head = _ellipsoid()
    skull = _ellipsoid(semi_axes=(12.0, 14.0, 10.0)) & ~_ellipsoid(semi_axes=(10.0, 12.0, 8.0))
    mr = np.where(head, 300.0, 0.0)
    mr[skull] = 5.0  # cortical bone is as dark as air on T1
    noisy = np.hypot(mr + rng.normal(0.0, 15.0, SHAPE), rng.normal(0.0, 15.0, SHAPE))  # Rician
    np.testing.assert_array_equal(body_mask(noisy, dilation=0), head)


def test_mr_mask_does_not_move_with_an_offset_a_scale_or_the_field_of_view():
    """No absolute value enters an MR mask: an MR stored minus 1500 or 5000 (below CT's -1024) or scaled
    gives the same mask, and so does the same head in a larger field of view (more background)."""
    rng = np.random.default_rng(4)
    head = _ellipsoid()
    mr = np.hypot(np.where(head, 300.0, 0.0) + rng.normal(0.0, 15.0, SHAPE), rng.normal(0.0, 15.0, SHAPE))
    reference = body_mask(mr, dilation=0, modality="mr")
    np.testing.assert_array_equal(reference, head)
    for variant in (mr - 1500.0, mr - 5000.0, 3.0 * mr + 7.0):
        np.testing.assert_array_equal(body_mask(variant, dilation=0, modality="mr"), reference)
    wide = np.pad(mr, 20, constant_values=-1.0)
    outside = wide == -1.0
    wide[outside] = np.hypot(*rng.normal(0.0, 15.0, (2, int(outside.sum()))))  # Rician background there too
    assert (body_mask(wide, dilation=0, modality="mr")[20:-20, 20:-20, 20:-20] != reference).mean() < 0.002


def test_out_of_field_padding_does_not_become_the_background_class():
    ct = _ct_head(np.random.default_rng(3))
    ct[:, :4, :] = -3024.0  # the scanner's value outside the reconstruction circle
    np.testing.assert_array_equal(body_mask(ct, dilation=0), _ellipsoid())


def test_slice_wise_filling_closes_a_canal_open_at_both_ends():
    head = _ellipsoid()
    canal = np.zeros(SHAPE, bool)
    canal[19:22, 20:23, :] = True  # runs along axis 2 through the whole head, like a trachea
    mask = head & ~canal
    assert not ndi.binary_fill_holes(mask)[20, 21, 18]  # a 3D fill alone leaves it open
    np.testing.assert_array_equal(fill_holes(mask), head)


def test_the_largest_component_wins_over_a_separate_table():
    rng = np.random.default_rng(4)
    ct = _ct_head(rng)
    ct[:, 42:44, :] = 200.0  # a table slab under the head, not touching it
    np.testing.assert_array_equal(body_mask(ct, dilation=0), _ellipsoid())


@pytest.mark.parametrize(("image", "message"), [
    (np.full(SHAPE, -1000.0), "constant"),
    (np.zeros((10, 10)), "3D"),
])
def test_unusable_images_raise_input_errors(image, message):
    with pytest.raises(InputError, match=message):
        body_mask(image)


def test_negative_dilation_is_refused():
    with pytest.raises(InputError, match="dilation"):
        body_mask(_ct_head(np.random.default_rng(5)), dilation=-1)


def _couch_under(ct: np.ndarray) -> np.ndarray:
    """A couch under the head touching it: a 2-voxel carbon-fibre top shell (200 HU) resting on the skin over
    a stretch of the back, foam below (-850 HU) and a base plate; returns the couch's voxels."""
    couch = np.zeros(SHAPE, bool)
    lowest = np.max(np.where(_ellipsoid().any(axis=(0, 2)))[0])
    couch[4:36, lowest + 1:lowest + 3, :] = True  # the top shell, in contact with the lowest skin voxels
    ct[couch] = 200.0
    ct[4:36, lowest + 3:lowest + 6, :] = -850.0  # foam
    base = np.zeros(SHAPE, bool)
    base[4:36, lowest + 6:lowest + 8, :] = True
    ct[base] = 300.0
    return couch | base


def test_a_couch_touching_the_body_is_not_body():
    rng = np.random.default_rng(5)
    ct = _ct_head(rng)
    couch = _couch_under(ct)
    assert ndi.label(ct > -400)[0][couch].min() == ndi.label(ct > -400)[0][_ellipsoid()].max()  # one component
    mask, head = body_mask(ct, dilation=0), _ellipsoid()
    contact = head & ndi.binary_dilation(couch)  # skin touching the shell: as bright as the shell, either may go
    assert not (mask & ~head).any() and mask[head & ~contact].all()
    default = body_mask(ct)
    assert not (default & couch).any() and default[head & ~contact].all()  # the dilation stops at the couch


def test_padding_below_the_scanners_range_is_never_body():
    ct = _ct_head(np.random.default_rng(6))
    ct[:, :, :8] = -3024.0  # outside the reconstruction circle, reaching into the head
    mask = body_mask(ct)
    assert not mask[:, :, :8].any() and mask[_ellipsoid() & (np.arange(SHAPE[2]) >= 8)].all()


def _reference_fill(mask: np.ndarray) -> np.ndarray:
    """scipy's own fill, slice-wise along each axis: what :func:`fill_holes` computes by labelling."""
    from medsynth.data.bodymask import _in_plane_cross

    for axis in range(mask.ndim):
        mask = ndi.binary_fill_holes(mask, structure=_in_plane_cross(axis, mask.ndim))
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_fill_and_dilation_in_the_bounding_box_equal_the_whole_grid_computation(seed):
    """A property over random blobby masks (holes, canals, bodies touching the array's faces, one-slice
    images): the labelled fill equals scipy's iterated fill, and filling and dilating in the bounding box
    equals doing both on the whole grid."""
    from skimage.morphology import ball

    from medsynth.data.bodymask import filled_and_dilated

    rng = np.random.default_rng(seed)
    shape = [(30, 26, 22), (40, 36, 1), (18, 50, 12)][seed % 3]
    smooth = ndi.gaussian_filter(rng.normal(size=shape), 2.0 if shape[2] > 1 else (2.0, 2.0, 0.0))
    mask = smooth > np.quantile(smooth, rng.uniform(0.3, 0.8))
    if seed >= 3:  # a small body away from the faces, with an enclosed hole and an open canal
        mask = np.zeros(shape, bool)
        mask[5:14, 6:16, : max(1, shape[2] // 2)] = True
        mask[8:10, 9:11, :] = False
    np.testing.assert_array_equal(fill_holes(mask), _reference_fill(mask))
    for dilation in (0, 1, 3):
        whole = _reference_fill(mask)
        whole = ndi.binary_dilation(whole, ball(dilation)) if dilation else whole
        np.testing.assert_array_equal(filled_and_dilated(mask, dilation), whole)
    assert not filled_and_dilated(np.zeros(shape, bool), 3).any()
