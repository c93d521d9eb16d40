"""The model grid (RAS at the model spacing) and its exact inverse, alone and between real files in every
input format: the output lands on the input's shape, affine, orientation and NIfTI codes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsynth.data.geometry import ModelGrid, median_spacing, ras_spacing
from medsynth.io import ImageMeta, read_image, write_ct, write_image

SHAPE = (14, 12, 6)
SPACING = (0.9, 1.1, 3.0)
GRADIENT = np.array([2.0, -1.5, 4.0])  # HU per mm along R, A, S
GEOMETRIES = {  # name -> (make_oblique_affine keywords, NIfTI qform/sform codes)
    "oblique": ({"lps": False}, (1, 2)),
    "oblique_lps": ({"lps": True}, (1, 0)),
    "lps": ({"angles": (0.0, 0.0, 0.0), "lps": True}, (2, 1)),
    "ras": ({"angles": (0.0, 0.0, 0.0), "lps": False}, (1, 1)),
}
PERMUTED = np.array([[0.0, 0.9, 0.0, -5.0],  # voxel axes run S, R, A
                     [0.0, 0.0, 1.1, 7.5],
                     [3.0, 0.0, 0.0, 12.0],
                     [0.0, 0.0, 0.0, 1.0]])


def _affine(oblique_affine, geometry: str) -> np.ndarray:
    return oblique_affine(SPACING, **GEOMETRIES[geometry][0])


def _ramp(world_coordinates, shape, affine) -> np.ndarray:
    """A linear HU field in world space; linear interpolation reproduces it exactly wherever it is defined."""
    return (300.0 + world_coordinates(shape, affine) @ GRADIENT).astype(np.float32)


def _inside(world_coordinates, shape, affine, grid_affine, grid_shape) -> np.ndarray:
    """Voxels of the (shape, affine) grid lying inside the span of the other grid's voxel centres."""
    index = world_coordinates(shape, np.linalg.inv(grid_affine) @ affine)  # voxel -> other grid's index
    return np.all((index >= -1e-6) & (index <= np.asarray(grid_shape) - 1 + 1e-6), axis=-1)


def _exact_after_round_trip(world_coordinates, shape, affine, on_grid) -> np.ndarray:
    """Input voxels whose value after forward + inverse depends only on model-grid voxels that were
    themselves interpolated inside the input (not extended by border padding), so a linear field
    comes back exactly there."""
    grid_affine, grid_shape = on_grid.affine.numpy(), np.asarray(on_grid.shape[1:])
    good = _inside(world_coordinates, tuple(grid_shape), grid_affine, affine, shape)
    index = world_coordinates(shape, np.linalg.inv(grid_affine) @ affine)
    base = np.floor(index + 1e-6).astype(int)
    exact = np.ones(shape, dtype=bool)
    for corner in np.ndindex(2, 2, 2):
        neighbour = base + np.asarray(corner)
        valid = np.all((neighbour >= 0) & (neighbour < grid_shape), axis=-1)
        clipped = np.clip(neighbour, 0, grid_shape - 1)
        exact &= valid & good[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
    return exact


# ------------------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (0.7, 1.3, 2.1)])
@pytest.mark.parametrize("geometry", [*GEOMETRIES, "permuted"])
def test_forward_gives_a_ras_grid_at_the_model_spacing_with_values_in_place(oblique_affine, world_coordinates,
                                                                          geometry, spacing):
    affine = PERMUTED if geometry == "permuted" else _affine(oblique_affine, geometry)
    shape = (6, 14, 12) if geometry == "permuted" else SHAPE
    ramp = _ramp(world_coordinates, shape, affine)

    out = ModelGrid(spacing).forward(ramp, ImageMeta.from_affine(affine, shape))

    assert out.ndim == 4 and out.shape[0] == 1
    grid = out.affine.numpy()
    assert nib.aff2axcodes(grid) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(grid[:3, :3], axis=0), spacing, atol=1e-5)
    # Each model-grid voxel holds the field at its own world position (where the input covers it).
    grid_shape = out.shape[1:]
    inside = _inside(world_coordinates, grid_shape, grid, affine, shape)
    assert inside.mean() > 0.3
    expected = _ramp(world_coordinates, grid_shape, grid)
    np.testing.assert_allclose(out.numpy()[0][inside], expected[inside], atol=1e-2)


@pytest.mark.parametrize("geometry", [*GEOMETRIES, "permuted"])
def test_inverse_of_forward_at_the_same_spacing_is_the_identity(oblique_affine, geometry):
    affine = PERMUTED if geometry == "permuted" else _affine(oblique_affine, geometry)
    shape = (6, 14, 12) if geometry == "permuted" else SHAPE
    meta = ImageMeta.from_affine(affine, shape)
    data = np.random.default_rng(0).normal(0.0, 100.0, shape).astype(np.float32)
    grid = ModelGrid(ras_spacing(meta))

    on_grid = grid.forward(data, meta)
    back = grid.inverse(on_grid, on_grid)

    assert back.shape == (1, *shape)
    np.testing.assert_allclose(back[0], data, atol=1e-4)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (0.7, 1.3, 2.1)])
@pytest.mark.parametrize("geometry", ["oblique", "oblique_lps", "lps"])
def test_a_smooth_signal_survives_other_spacings(oblique_affine, world_coordinates, geometry, spacing):
    affine = _affine(oblique_affine, geometry)
    ramp = _ramp(world_coordinates, SHAPE, affine)
    grid = ModelGrid(spacing)

    on_grid = grid.forward(ramp, ImageMeta.from_affine(affine, SHAPE))
    back = grid.inverse(on_grid, on_grid)[0]

    assert back.shape == SHAPE
    inside = _exact_after_round_trip(world_coordinates, SHAPE, affine, on_grid)
    assert inside.mean() > 0.2
    np.testing.assert_allclose(back[inside], ramp[inside], atol=1e-2)
    # Near the border the field is extended ("border" padding): off by at most a model voxel's worth.
    assert np.abs(back - ramp).max() < np.linalg.norm(GRADIENT) * max(spacing)


def test_nearest_mode_keeps_labels_exact(oblique_affine):
    affine = _affine(oblique_affine, "oblique_lps")
    labels = np.random.default_rng(3).integers(0, 6, SHAPE).astype(np.float32)
    meta = ImageMeta.from_affine(affine, SHAPE)

    same = ModelGrid(SPACING)
    on_grid = same.forward(labels, meta, mode="nearest")
    np.testing.assert_array_equal(same.inverse(on_grid, on_grid, mode="nearest")[0], labels)

    coarse = ModelGrid((2.0, 2.0, 2.0))
    on_grid = coarse.forward(labels, meta, mode="nearest")
    assert set(np.unique(on_grid.numpy())) <= set(range(6))
    back = coarse.inverse(on_grid, on_grid, mode="nearest")[0]
    assert back.shape == SHAPE and set(np.unique(back)) <= set(range(6))


def test_one_grid_inverts_interleaved_volumes_each_onto_its_own_grid(oblique_affine, world_coordinates):
    grid = ModelGrid((1.5, 1.5, 1.5))
    first_affine, second_affine = _affine(oblique_affine, "oblique"), PERMUTED
    first = _ramp(world_coordinates, SHAPE, first_affine)
    second = _ramp(world_coordinates, (6, 14, 12), second_affine)

    a = grid.forward(first, ImageMeta.from_affine(first_affine, SHAPE))
    b = grid.forward(second, ImageMeta.from_affine(second_affine, (6, 14, 12)))
    back_a, back_b = grid.inverse(a, a)[0], grid.inverse(b, b)[0]

    assert back_a.shape == SHAPE and back_b.shape == (6, 14, 12)
    for back, ramp, affine, on_grid in ((back_a, first, first_affine, a), (back_b, second, second_affine, b)):
        inside = _exact_after_round_trip(world_coordinates, ramp.shape, affine, on_grid)
        np.testing.assert_allclose(back[inside], ramp[inside], atol=1e-2)


def test_ras_spacing_follows_the_world_axes_and_the_default_is_their_median(oblique_affine):
    assert ras_spacing(ImageMeta.from_affine(PERMUTED, (6, 14, 12))) == pytest.approx((0.9, 1.1, 3.0))
    assert ras_spacing(ImageMeta.from_affine(_affine(oblique_affine, "oblique_lps"), SHAPE)) == pytest.approx(SPACING)
    metas = [ImageMeta.from_affine(np.diag([*s, 1.0]), SHAPE) for s in ((1, 1, 3), (2, 1, 2), (1.5, 0.5, 5))]
    assert median_spacing(metas) == pytest.approx((1.5, 1.0, 3.0))


# ------------------------------------------------------------------ files -> grid -> files, every format


def _write_input(kind: str, folder, ramp, affine, codes, write_volume, write_dicom_series):
    if kind == "dicom":
        return write_dicom_series(folder / "series", np.rint(ramp), affine, slope=1.0, intercept=-1024.0)
    return write_volume(folder / f"input{kind}", ramp, affine, qform_code=codes[0], sform_code=codes[1])


@pytest.mark.parametrize("geometry", ["oblique", "oblique_lps", "lps"])
@pytest.mark.parametrize("kind", [".nii", ".nii.gz", ".mha", ".nrrd", "dicom"])
def test_files_through_the_model_grid_come_back_on_the_input_grid(tmp_path, oblique_affine, world_coordinates,
                                                                  write_volume, write_dicom_series, kind, geometry):
    affine = _affine(oblique_affine, geometry)
    codes = GEOMETRIES[geometry][1]
    ramp = _ramp(world_coordinates, SHAPE, affine)
    source = _write_input(kind, tmp_path, ramp, affine, codes, write_volume, write_dicom_series)

    volume = read_image(source)
    grid = ModelGrid((1.5, 1.5, 1.5))
    on_grid = grid.forward(volume.array, volume.meta)
    back = grid.inverse(on_grid, on_grid)[0]
    float_map = nib.load(write_image(tmp_path / "out" / "map.nii.gz", back, volume.meta))
    ct = nib.load(write_ct(tmp_path / "out" / "ct.nii.gz", back, volume.meta))

    for image in (float_map, ct):
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.affine, affine, atol=1e-4)
        assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(affine)
        if kind.startswith(".nii"):
            assert (int(image.header["qform_code"]), int(image.header["sform_code"])) == codes
        else:
            assert int(image.header["qform_code"]) > 0 and int(image.header["sform_code"]) > 0
    assert float_map.get_data_dtype() == np.float32 and ct.get_data_dtype() == np.int16

    reference = np.rint(ramp) if kind == "dicom" else ramp  # DICOM stores integers
    inside = _exact_after_round_trip(world_coordinates, SHAPE, affine, on_grid)
    assert inside.mean() > 0.2
    tolerance = 1.0 if kind == "dicom" else 1e-2  # rounding breaks exact linearity by up to 0.5 HU
    np.testing.assert_allclose(np.asarray(float_map.dataobj)[inside], reference[inside], atol=tolerance)
    np.testing.assert_allclose(np.asarray(ct.dataobj)[inside], reference[inside], atol=tolerance + 0.5)
