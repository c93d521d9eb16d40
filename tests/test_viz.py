"""PNG preview helpers: windowing, radiological orientation, colours, overlays and grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medsynth import viz

SHAPE = (10, 12, 14)  # x, y, z in RAS voxel order


def _marker(index: tuple[int, int, int]) -> np.ndarray:
    volume = np.zeros(SHAPE, np.float32)
    volume[index] = 1.0
    return volume


def test_window_clips_and_scales_to_uint8():
    out = viz.window(np.array([-2000.0, -1000.0, 0.0, 1000.0, 5000.0]), -1000, 1000)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError):
        viz.window(np.zeros(3), 1.0, 1.0)


def test_auto_window_spans_the_range_and_blackens_constants():
    ramp = viz.auto_window(np.linspace(0, 1, 1000), percentiles=(0, 100))
    assert ramp.min() == 0 and ramp.max() == 255
    assert not viz.auto_window(np.full((4, 4), 7.0)).any()


def test_mid_slices_have_the_display_shapes():
    slices = viz.mid_slices(np.zeros(SHAPE))
    assert slices.axial.shape == (12, 10)  # rows run anterior -> posterior, columns right -> left
    assert slices.coronal.shape == (14, 10)
    assert slices.sagittal.shape == (14, 12)


def test_mid_slices_follow_the_radiological_convention():
    nx, ny, nz = SHAPE
    centre = (nx // 2, ny // 2, nz // 2)
    # The patient's right (largest x) lands in the first column of axial and coronal views.
    right = viz.mid_slices(_marker((nx - 1, ny // 2, nz // 2)))
    assert right.axial[:, 0].any() and right.coronal[:, 0].any()
    # Anterior (largest y) is the top row of the axial view and the first column of the sagittal.
    anterior = viz.mid_slices(_marker((nx // 2, ny - 1, nz // 2)))
    assert anterior.axial[0].any() and anterior.sagittal[:, 0].any()
    # Superior (largest z) is the top row of the coronal and sagittal views.
    superior = viz.mid_slices(_marker((nx // 2, ny // 2, nz - 1)))
    assert superior.coronal[0].any() and superior.sagittal[0].any()
    assert viz.mid_slices(_marker(centre), centre=centre).axial.sum() == 1


def test_mid_slices_reorient_with_the_affine():
    ras = np.random.default_rng(0).random(SHAPE)
    lps = ras[::-1, ::-1, :]  # the same image stored left-posterior-superior
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = [SHAPE[0] - 1, SHAPE[1] - 1, 0]
    for expected, got in zip(viz.mid_slices(ras), viz.mid_slices(lps, affine=lps_affine), strict=True):
        np.testing.assert_array_equal(expected, got)


def test_mid_slices_make_pixels_square():
    slices = viz.mid_slices(np.zeros(SHAPE), affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    assert slices.axial.shape == (12, 10)
    assert slices.coronal.shape == (28, 10) and slices.sagittal.shape == (28, 12)


def test_label_colors_are_rgb_with_black_background():
    labels = np.array([[0, 1, 2], [3, 4, 5]])
    rgb = viz.label_colors(labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert not rgb[0, 0].any()
    assert len({tuple(c) for c in rgb.reshape(-1, 3)}) == 6
    assert viz.label_colors(np.array([40])).shape == (1, 3)  # labels past the palette still get colours


def test_overlay_signed_map_colours_sign_and_leaves_zero_alone():
    grey = np.full((2, 2), 100, np.uint8)
    rgb = viz.overlay_signed_map(grey, np.array([[0.0, 1.0], [-1.0, 0.001]]), limit=1.0)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [100, 100, 100]
    red, blue = rgb[0, 1].astype(int), rgb[1, 0].astype(int)
    assert red[0] > 200 and red[0] > red[2]
    assert blue[2] > 200 and blue[2] > blue[0]
    assert np.abs(rgb[1, 1].astype(int) - 100).max() <= 1
    with pytest.raises(ValueError):
        viz.overlay_signed_map(grey, np.zeros((3, 3)))


def test_save_grid_writes_a_readable_png(tmp_path):
    grey = np.linspace(0, 1, 20 * 30).reshape(20, 30)
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 255
    path = viz.save_grid(tmp_path / "sub" / "grid.png", [[grey, rgb], [rgb]], ["ramp", "red", ""], scale=2)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        width, height = image.size
        pixels = np.asarray(image)
    assert width >= 2 * 60 and height >= 2 * 40
    assert (pixels[..., 0] == 255).any() and pixels.max() == 255
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left behind


def test_save_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="titles"):
        viz.save_grid(tmp_path / "a.png", [[np.zeros((4, 4))]], ["one", "two"])
    with pytest.raises(ValueError, match="panel"):
        viz.save_grid(tmp_path / "b.png", [[np.zeros((2, 2, 2, 2))]])
    with pytest.raises(ValueError):
        viz.save_grid(tmp_path / "c.png", [])
    assert not list(tmp_path.iterdir())
