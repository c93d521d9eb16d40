"""The no-context lookup baseline: exact on a monotone intensity map, fitted and scored in the reference body
mask, blind to bone versus air."""

from __future__ import annotations

import json

import numpy as np
import yaml
from typer.testing import CliRunner

from medsynth.baselines import IntensityLookup, lookup_baseline
from medsynth.cli import app
from medsynth.io import ImageMeta, read_image, write_ct, write_image
from medsynth.metrics.tissue import tissue_mae
from medsynth.phantom.anatomy import LABEL_NAMES, make_head


def _head(seed: int):
    return make_head(seed, (32, 38, 32), 5.0)


def _monotone_hu(mr: np.ndarray) -> np.ndarray:
    """A known, non-linear, increasing MR -> HU map."""
    return (-1000.0 + 2500.0 * (mr / 1000.0) ** 2).astype(np.float32)


def test_lookup_recovers_a_known_monotone_mapping_almost_exactly() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((24, 24, 24), bool)
    mask[3:21, 3:21, 3:21] = True
    cases = []
    for _ in range(3):
        mr = np.where(mask, rng.uniform(0, 1000, mask.shape), 0.0).astype(np.float32)
        mr[mask] = np.sort(mr[mask])  # any layout: the table sees intensities only
        cases.append((mr, np.where(mask, _monotone_hu(mr), -1000.0), mask))
    table = IntensityLookup.fit(cases, bins=200)
    mr = np.where(mask, rng.uniform(0, 1000, mask.shape), 0.0).astype(np.float32)
    predicted = table.predict(mr, mask)
    inner = mask & (mr > 20) & (mr < 980)  # the ends fall in the 1st/99th-percentile clipping
    # one bin spans 1000/200 = 5 MR units, i.e. at most 25 HU of this map; the median error is far below
    assert np.median(np.abs(predicted - _monotone_hu(mr))[inner]) < 5.0
    assert np.abs(predicted - _monotone_hu(mr))[inner].max() < 30.0
    assert np.all(predicted[~mask] == -1000.0)


def test_lookup_is_fitted_in_the_reference_mask_so_dark_skull_is_not_air(tmp_path) -> None:
    """Dark bone inside the reference mask belongs to the table's dark bins, so it is not given air."""
    for folder, seeds in (("train", (1, 2, 3)), ("test", (4,))):
        for seed in seeds:
            head = _head(seed)
            meta = ImageMeta.from_affine(head.affine, head.mr.shape)
            write_image(tmp_path / folder / "mr" / f"h{seed}.nii.gz", head.mr, meta)
            write_ct(tmp_path / folder / "ct" / f"h{seed}.nii.gz", head.ct, meta)
            write_image(tmp_path / folder / "mask" / f"h{seed}.nii.gz", head.mask.astype(np.uint8), meta, np.uint8)
    out = lookup_baseline(tmp_path / "train", tmp_path / "test" / "mr", tmp_path / "lut", tmp_path / "test" / "mask")
    predicted = read_image(out / "h4.nii.gz").array
    head = _head(4)
    bone = head.labels == LABEL_NAMES.index("bone")
    assert np.median(predicted[bone]) > -500  # dark bone and air share bins: a mix, never plain air
    assert np.abs(predicted - head.ct)[head.mask.astype(bool)].mean() < 250


def test_lookup_is_right_on_brain_and_wrong_on_bone() -> None:
    """Brain contrast is unique on MR; bone is dark like air, so one value serves both and bone MAE is large."""
    heads = [_head(s) for s in (1, 2, 3)]
    table = IntensityLookup.fit([(h.mr, h.ct, h.mask.astype(bool)) for h in heads])
    head = _head(4)
    predicted = table.predict(head.mr, head.mask.astype(bool))
    brain = head.labels == LABEL_NAMES.index("brain")
    errors = tissue_mae(predicted, head.ct, head.mask.astype(bool))
    assert abs(np.median(predicted[brain]) - np.median(head.ct[brain])) < 30
    assert errors["mae_bone"] > 2.5 * errors["mae_soft"] and errors["mae_air"] > 2.5 * errors["mae_soft"]


def test_training_says_loudly_when_the_model_is_not_better_than_the_lookup_table(tmp_path, paired_phantom) -> None:
    """Two steps cannot beat the table: the validation lists both, and train prints a warning on stderr."""
    data = paired_phantom(tmp_path / "data", cases=4, shape=(24, 28, 24), spacing=6.0)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8,
                                                "disc_layers": 2, "val_cases": 1}}))
    result = CliRunner().invoke(app, ["train", "pix2pix", str(data), "--out", str(tmp_path / "run"), "--config",
                                      str(config), "--steps", "2", "--val-every", "2", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "WARNING: the model is NOT better than a no-context MR-intensity lookup table" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    validation = [r["validation"] for r in records if "validation" in r][-1]
    assert validation["mae"] >= validation["lookup_mae"] > 0
