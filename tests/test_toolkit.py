"""The shared volumetric toolkit: the grid predictor, the one preparation of a volume, the patch sampler, the
typed model metadata and the engine's evaluation mode without inference mode (saliency needs input gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medsynth.data.geometry import ModelGrid
from medsynth.data.intensity import CTIntensity, MRIntensity, MRScaling
from medsynth.data.patches import PatchDraw, PatchSampler, body_anchors
from medsynth.data.volumes import (
    labels_on_grid,
    mask_on_grid,
    normalise_channels,
    normalise_source,
    on_grid,
    to_grid,
)
from medsynth.engine.modes import eval_mode
from medsynth.errors import ModelError
from medsynth.inference.predictor import GridPredictor
from medsynth.io.image import ImageMeta, Volume
from medsynth.modelfile import AttributionMetadata, DirectionSpec, TranslationMetadata


def _toy_network(dims: int, in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return nn.Sequential(conv(in_channels, 4, 3, padding=1), nn.Tanh(), conv(4, 2, 3, padding=1)).eval()


# -- the grid predictor ---------------------------------------------------------------------------


def test_3d_prediction_is_monai_sliding_window_inference_with_background_padding():
    network, image = _toy_network(3), torch.randn(1, 1, 20, 18, 12)
    out = GridPredictor(3, (8, 8, 8), overlap=0.5, sw_batch_size=3)(network, image)
    with torch.no_grad():
        expected = sliding_window_inference(image, (8, 8, 8), 3, network, overlap=0.5, mode="gaussian", cval=-1.0)
    assert out.shape == (1, 2, 20, 18, 12)
    assert torch.equal(out, expected)


def test_2d_prediction_runs_the_axial_slices_as_a_batch():
    network, image = _toy_network(2), torch.randn(1, 1, 20, 18, 5)
    out = GridPredictor(2, (8, 8), overlap=0.25)(network, image)
    slices = image[0].permute(3, 0, 1, 2)  # (Z, C, X, Y)
    with torch.no_grad():
        expected = sliding_window_inference(slices, (8, 8), 4, network, overlap=0.25, mode="gaussian", cval=-1.0)
    assert torch.equal(out, expected.permute(1, 2, 3, 0)[None])


def test_25d_prediction_feeds_each_slice_with_its_neighbours():
    network, image = _toy_network(2, in_channels=3), torch.randn(1, 1, 16, 16, 4)
    out = GridPredictor(2, (16, 16), context_slices=1)(network, image)
    # Slice 0 sees slices (0, 0, 1): the end slice repeats.
    first = torch.stack([image[0, 0, :, :, z] for z in (0, 0, 1)])[None]
    with torch.no_grad():
        expected = sliding_window_inference(first, (16, 16), 1, network, mode="gaussian", cval=-1.0)
    assert torch.allclose(out[0, :, :, :, 0], expected[0], atol=1e-6)


@pytest.mark.parametrize("flips", [(0,), (1, 2)])
def test_a_flipped_pass_is_the_mirrored_prediction_of_the_mirrored_image(flips):
    network, image = _toy_network(3), torch.randn(1, 1, 16, 16, 16)
    predictor = GridPredictor(3, (16, 16, 16))
    spatial = [a + 2 for a in flips]
    flipped = predictor(network, image, flips)
    assert torch.equal(flipped, torch.flip(predictor(network, torch.flip(image, spatial)), spatial))
    assert not torch.allclose(flipped, predictor(network, image))


def test_whole_volume_windows_for_a_network_free_of_window_statistics():
    network, image = _toy_network(3), torch.randn(1, 1, 24, 16, 16)
    out = GridPredictor(3, (8, 8, 8), window_divisor=8)(network, image)
    with torch.no_grad():
        assert torch.allclose(out, network(image), atol=1e-5)  # one window: no border anywhere


def test_to_units_denormalises_each_channel():
    network, image = _toy_network(3), np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    predictor, ct = GridPredictor(3, (8, 8, 8)), CTIntensity()
    hu = predictor.to_units(network, image, ct)
    assert hu.shape == (2, 8, 8, 8)
    np.testing.assert_array_equal(hu, ct.denormalise(predictor.volume(network, image).numpy()))


# -- one preparation of a volume ------------------------------------------------------------------


def _volume(array: np.ndarray, spacing: float = 2.0) -> Volume:
    return Volume(array.astype(np.float32), ImageMeta.from_affine(np.diag([spacing] * 3 + [1.0]), array.shape))


def _head(shape=(20, 20, 20)) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    rng = np.random.default_rng(0)
    return np.where(x**2 + y**2 + z**2 < 49, 400.0 + 50.0 * rng.random(shape), 5.0 * rng.random(shape))


def test_each_mr_contrast_is_scaled_on_its_own_body():
    head = _head()
    mr = MRIntensity(scaling=MRScaling.PERCENTILE)
    two = normalise_channels(np.stack([head, 3.0 * head + 100.0]), mr)
    assert two.shape == (2, *head.shape)
    np.testing.assert_allclose(two[1], two[0], atol=1e-5)  # scale and offset do not matter
    np.testing.assert_array_equal(two[0], normalise_source(head, mr))


def test_a_ct_is_windowed_whatever_the_foreground():
    hu = np.linspace(-1500, 3000, 1000, dtype=np.float32).reshape(10, 10, 10)
    ct = CTIntensity()
    np.testing.assert_array_equal(normalise_channels(hu[None], ct, foreground=hu > 0)[0], ct.normalise(hu))


def test_preparation_on_the_image_grid_keeps_images_masks_and_labels():
    head = _head()
    grid = ModelGrid((2.0, 2.0, 2.0))
    np.testing.assert_allclose(on_grid(grid, _volume(head)), head, rtol=1e-6)
    mask = head > 100
    np.testing.assert_array_equal(mask_on_grid(grid, mask, _volume(head).meta), mask)
    labels = (head > 100).astype(np.float32) + (head > 420)
    assert labels_on_grid(grid, _volume(labels)).dtype == np.uint8
    np.testing.assert_array_equal(labels_on_grid(grid, _volume(labels))[0], labels)


def test_the_way_back_needs_only_the_geometry_and_lands_on_the_input_grid(oblique_affine):
    head = _head((16, 18, 14))
    volume = Volume(head.astype(np.float32), ImageMeta.from_affine(oblique_affine((1.0, 1.2, 2.0)), head.shape))
    grid = ModelGrid((1.0, 1.0, 1.0))
    moved = to_grid(grid, volume, release=True)
    assert volume.array.size == 0  # the input's voxels are released once on the model grid
    assert moved.geometry.numel() == 1  # the geometry holds no voxels
    back = grid.inverse(torch.from_numpy(moved.values[None]), moved.geometry)[0]
    assert back.shape == head.shape
    inside = np.zeros(head.shape, bool)
    inside[3:-3, 3:-3, 3:-3] = True  # away from the border, where resampling pads
    assert np.corrcoef(back[inside], head[inside])[0, 1] > 0.95


def test_a_coarser_grid_resamples_masks_by_nearest_neighbour():
    mask = _head() > 100
    coarse = mask_on_grid(ModelGrid((4.0, 4.0, 4.0)), mask, _volume(mask.astype(np.float32)).meta)
    assert coarse.dtype == bool and coarse.shape == (10, 10, 10)
    assert 0 < coarse.sum() < coarse.size


# -- the patch sampler ----------------------------------------------------------------------------


class _Case:
    def __init__(self, image: np.ndarray, mask: np.ndarray, slices: np.ndarray | None = None) -> None:
        self.image, self.mask, self.anchors = image, mask, body_anchors(mask)
        self.slices = np.arange(image.shape[-1]) if slices is None else slices


def _cases() -> list[_Case]:
    rng = np.random.default_rng(1)
    cases = []
    for size in (12, 16, 20):
        mask = np.zeros((size, size, size), bool)
        mask[3:size - 3, 4:size - 4, 2:size - 5] = True
        cases.append(_Case(rng.standard_normal((1, size, size, size)).astype(np.float32), mask))
    return cases


def _sample(sampler: PatchSampler, cases: list[_Case], index: int) -> tuple[np.ndarray, tuple]:
    rng = sampler.rng(index)
    case, draw = sampler.body(rng, cases)
    return sampler.cut(case.image, draw), (draw.start, draw.flips, float(rng.random()))


def test_a_sample_depends_on_its_index_only_whatever_was_drawn_before():
    sampler, cases = PatchSampler((8, 8, 8), seed=3, body_fraction=0.9, flip_axes=(0, 1)), _cases()
    forward = [_sample(sampler, cases, i) for i in range(12)]
    backward = [_sample(sampler, cases, i) for i in reversed(range(12))][::-1]
    for (patch_a, draw_a), (patch_b, draw_b) in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(patch_a, patch_b)
        assert draw_a == draw_b
    assert len({d for _, d in forward}) == 12  # and the indices differ
    other_seed = PatchSampler((8, 8, 8), seed=4, body_fraction=0.9, flip_axes=(0, 1))
    assert _sample(other_seed, cases, 0)[1] != forward[0][1]


def test_body_patches_centre_inside_the_body():
    sampler, cases = PatchSampler((6, 6, 6), body_fraction=1.0), _cases()
    for index in range(50):
        case, draw = sampler.body(sampler.rng(index), cases)
        centre = tuple(s + 3 for s in draw.start)
        assert case.mask[centre]


def test_a_whole_patch_holds_the_image_centred_and_pads_with_the_background():
    image = np.arange(5 * 6 * 4, dtype=np.float32).reshape(1, 5, 6, 4)
    case = _Case(image, np.ones(image.shape[1:], bool), slices=np.array([2]))
    sampler = PatchSampler((8, 8))
    drawn, draw = sampler.whole(sampler.rng(0), [case])
    patch = sampler.cut(drawn.image, draw)
    assert patch.shape == (1, 8, 8) and draw.start == (-1, -1, 2)
    np.testing.assert_array_equal(patch[0, 1:6, 1:7], image[0, :, :, 2])
    assert (patch[0, 0] == -1).all() and (patch[0, :, 7] == -1).all()


def test_labels_are_cut_like_the_image_and_padded_with_background_label_zero():
    labels = np.ones((1, 4, 4, 4), np.uint8)
    sampler = PatchSampler((8, 8, 8))
    patch = sampler.cut(labels, PatchDraw((-2, -2, -2), ()), pad_value=0)
    assert patch.dtype == np.uint8 and patch.sum() == 64 and patch[0, 2:6, 2:6, 2:6].all()


# -- typed metadata -------------------------------------------------------------------------------


def _translation() -> TranslationMetadata:
    mr, ct = MRIntensity(), CTIntensity()
    return TranslationMetadata(spatial_dims=3, patch_size=(16, 16, 16), spacing=(1.5, 1.5, 2.0), flip_axes=(0,),
                               directions={"mr2ct": DirectionSpec("G", mr, ct), "ct2mr": DirectionSpec("F", ct, mr)},
                               mr_channels=("0000", "0001"), window_divisor=8, data_fingerprint="abc",
                               training_cases={"mr": 3, "ct": 4}, provenance={"labels": 5})


def test_translation_metadata_survives_its_json_document():
    metadata = _translation()
    document = metadata.to_json()
    assert document["patch_size"] == [16, 16, 16] and document["labels"] == 5
    assert document["directions"]["mr2ct"] == {"network": "G", "source": MRIntensity().to_json(),
                                               "target": CTIntensity().to_json()}
    assert TranslationMetadata.from_json(document) == metadata


def test_an_old_translation_file_without_window_keys_reads_their_defaults():
    document = _translation().to_json()
    del document["window_divisor"], document["context_slices"], document["mr_channels"]
    metadata = TranslationMetadata.from_json(document)
    assert (metadata.window_divisor, metadata.context_slices, metadata.mr_channels) == (None, 0, ("0000",))


def test_metadata_without_what_inference_needs_is_refused_with_the_file_named():
    document = _translation().to_json()
    del document["directions"]
    with pytest.raises(ModelError, match=r"model\.safetensors: .*lacks directions"):
        TranslationMetadata.from_json(document, "model.safetensors")


def test_attribution_metadata_reads_its_intensity_as_a_typed_object():
    metadata = AttributionMetadata(spatial_dims=2, patch_size=(32, 32), spacing=(2.0, 2.0, 2.0), map_network="M",
                                   intensity=MRIntensity(scaling=MRScaling.ZSCORE), provenance={"lambda_map": 3.0})
    read = AttributionMetadata.from_json(metadata.to_json())
    assert isinstance(read.intensity, MRIntensity) and read.intensity.scaling is MRScaling.ZSCORE
    assert read == metadata


# -- evaluation mode with gradients ---------------------------------------------------------------


def test_eval_mode_keeps_autograd_and_restores_every_module():
    network = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    network[1].eval()  # a part kept in another mode than its parent stays so
    x = torch.randn(2, 3, requires_grad=True)
    with eval_mode([network]):
        assert not network.training
        (gradient,) = torch.autograd.grad(network(x).sum(), x)
    assert gradient.shape == x.shape
    assert network.training and not network[1].training
