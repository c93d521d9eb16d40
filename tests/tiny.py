"""What several CLI tests share: a 2-step pix2pix on a small phantom, the CLI runner, the one-error-line check."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.training import train

TRAIN = {"steps": 2, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}


def run_cli(*args: object):
    """``medsynth ARGS...`` through Typer's runner."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single ``error:`` line of a command refused with exit code 2."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def tiny_run(data: Path, run: Path, seed: int = 0, **model: object) -> Path:
    """A pix2pix run of :data:`TRAIN` steps on ``data`` (``model`` overrides :data:`MODEL`)."""
    train("pix2pix", data, run, {**TRAIN, "seed": seed}, {**MODEL, **model})
    return run
