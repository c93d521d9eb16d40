"""``train --init MODEL``: a fresh run's networks start from a trained model's weights when they fit, and a
model that does not fit (other networks, other normalisation, other family) is one line before anything is
written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tiny import MODEL as TINY_MODEL
from tiny import tiny_run
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.engine.initialise import initialise_from
from medsynth.errors import UsageError
from medsynth.families.pix2pix import Pix2Pix, Pix2PixConfig
from medsynth.modelfile import load_model, model_fingerprint

MODEL = {**TINY_MODEL, "lr": 1e-3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, paired_phantom) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finetune")
    data = paired_phantom(root / "data", cases=2, shape=(20, 24, 20), spacing=7.0)
    return tiny_run(data, root / "base", lr=1e-3), data


def test_a_fresh_run_starts_from_the_models_generator(trained):
    base, data = trained
    family = Pix2Pix(Pix2PixConfig(**MODEL), data)
    assert not all(torch.equal(a, b) for a, b in zip(family.networks["G"].state_dict().values(),
                                                       load_model(base).weights["G"].values(), strict=True))
    assert initialise_from(family, base) == model_fingerprint(base / "model.safetensors")
    for name, value in load_model(base).weights["G"].items():
        assert torch.equal(family.networks["G"].state_dict()[name], value), name


def test_the_cli_fine_tunes_and_records_where_from(trained, tmp_path):
    base, data = trained
    result = CliRunner().invoke(app, ["train", "pix2pix", str(data), "--out", str(tmp_path / "tuned"), "--init",
                                      str(base), "--steps", "2", "--batch-size", "1", "--patch-size", "16",
                                      "--device", "cpu", "--val-every", "0", "--config", str(_config(tmp_path))])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text())
    assert document["init"]["fingerprint"] == model_fingerprint(base / "model.safetensors")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text("model:\n  channels: [8, 16]\n  disc_channels: 8\n  disc_layers: 2\n  lr: 1.0e-3\n")
    return path


def test_a_model_that_does_not_fit_is_one_line_and_writes_nothing(trained, tmp_path):
    base, data = trained
    with pytest.raises(UsageError, match="channels"):
        initialise_from(Pix2Pix(Pix2PixConfig(**{**MODEL, "channels": [8, 16, 32]}), data), base)
    with pytest.raises(UsageError, match="scaling"):
        initialise_from(Pix2Pix(Pix2PixConfig(**MODEL, mr_scaling="percentile"), data), base)
    result = CliRunner().invoke(app, ["train", "pix2pix", str(data), "--out", str(tmp_path / "bad"), "--init",
                                      str(base), "--steps", "2", "--patch-size", "32", "--device", "cpu"])
    assert result.exit_code == 2 and "cannot initialise" in result.output and not (tmp_path / "bad").exists()
