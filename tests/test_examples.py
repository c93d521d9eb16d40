"""Every config in ``examples/`` is one a user can train with: known keys, valid values."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.engine.config import TrainConfig, build_config, read_yaml
from medsynth.training import FamilyName, family_classes

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_there_is_an_example_config_for_every_family():
    # vox2vox is pix2pix with dims 3: its example is pix2pix.yaml.
    assert {path.stem.split("_")[0] for path in EXAMPLES} == {str(f) for f in FamilyName} - {"vox2vox"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_builds(path: Path):
    family_cls, config_cls = family_classes(path.stem.split("_")[0])
    document = read_yaml(path)
    # build_config raises UsageError on an unknown key or a value its dataclass refuses.
    train = build_config(TrainConfig, family_cls.train_defaults, document.get("train", {}))
    for key, value in document.get("train", {}).items():
        assert getattr(train, key) == value, key
    model = build_config(config_cls, document.get("model", {}))
    for key, value in document.get("model", {}).items():
        if value is not None:
            assert getattr(model, key) == (tuple(value) if isinstance(value, list) else value), key
    assert set(document) <= {"train", "model"}
