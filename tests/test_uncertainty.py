"""MC-dropout uncertainty is a quality signal: larger at bone/air boundaries than inside homogeneous brain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medsynth.io.image import read_image
from medsynth.phantom.anatomy import LABEL_NAMES
from medsynth.phantom.kinds import write_phantom
from medsynth.services.translate import TranslateOptions, translate
from medsynth.training import train


def test_uncertainty_is_higher_where_bone_meets_air(tmp_path: Path) -> None:
    write_phantom("paired", tmp_path / "data", cases=4, shape=(32, 40, 32), spacing=5.0, seed=3)
    write_phantom("paired", tmp_path / "test", cases=1, shape=(32, 40, 32), spacing=5.0, seed=9)
    train("pix2pix", tmp_path / "data", tmp_path / "run",
          {"steps": 200, "batch_size": 2, "val_every": 0, "ckpt_every": 1000, "preview_every": 1000, "device": "cpu"},
          {"patch_size": [16, 16, 16], "channels": [8, 16, 32], "disc_channels": 8, "disc_layers": 2, "lr": 3e-3,
           "dropout": 0.1})
    translate(tmp_path / "run", tmp_path / "test" / "mr", tmp_path / "out", TranslateOptions(uncertainty=6))

    std = read_image(tmp_path / "out" / "case_000_std.nii.gz", check_values=False).array
    labels = read_image(tmp_path / "test" / "labels" / "case_000.nii.gz", check_values=False).array
    bone = labels == LABEL_NAMES.index("bone")
    air = np.isin(labels, [LABEL_NAMES.index("air_cavity"), LABEL_NAMES.index("background")])
    boundary = ndimage.binary_dilation(bone) & ndimage.binary_dilation(air)
    brain = ndimage.binary_erosion(labels == LABEL_NAMES.index("brain"), iterations=2)
    assert boundary.sum() > 100 and brain.sum() > 100
    assert std[boundary].mean() > 1.15 * std[brain].mean(), (std[boundary].mean(), std[brain].mean())
    assert (tmp_path / "out" / "case_000_std.png").is_file()
