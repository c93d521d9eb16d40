"""Run folders that survive preemption and mistakes: resume without a checkpoint, changed settings refused
before anything is written, config files validated by type and range (the real CLI, tiny runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.modelfile import load_model
from medsynth.phantom.kinds import write_phantom

TINY = {"model": {"channels": [8, 16, 32], "disc_channels": 8, "disc_layers": 2, "val_cases": 0},
        "train": {"val_every": 0, "preview_every": 100, "ckpt_every": 100, "batch_size": 1}}
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paired") / "data"
    write_phantom("paired", out, cases=2, shape=(24, 24, 24), spacing=8.0, seed=1)
    return out


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def command(data: Path, run: Path, config: Path, *extra: str, patch: str = "16") -> list[str]:
    return ["train", "pix2pix", str(data), "--out", str(run), "--config", str(config), "--patch-size", patch,
            "--device", "cpu", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).weights["G"]


@pytest.fixture(scope="module")
def finished(data: Path, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (its files are only read)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = runner.invoke(app, command(data, run, tiny_config, "--steps", "2"))
    assert result.exit_code == 0, result.output
    return run


# -- 1. preemption ---------------------------------------------------------------------------------
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_fresh(data, tiny_config, tmp_path):
    """What a SIGKILL during the first steps leaves (settings, a log, half a checkpoint) blocks nothing."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".last.pt.1a2b3c4d.partial").write_bytes(b"half a checkpoint")
    (run / "config.yaml").write_text(yaml.safe_dump({"family": "pix2pix", "data": str(data), **TINY}))
    (run / "log.jsonl").write_text('{"step": 1, "losses": {"G": 9.0}}\n')
    result = runner.invoke(app, command(data, run, tiny_config, "--steps", "2", "--resume"))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no checkpoint" in notes[0] and "fresh" in notes[0]
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert not list(run.rglob("*.partial"))
    logged = [yaml.safe_load(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == [2]  # the killed attempt's entry is gone; log_every 10 logs the last step only


def test_a_killed_run_folder_does_not_block_a_fresh_start(data, tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"family": "pix2pix", "data": str(data), **TINY}))
    (run / "checkpoints").mkdir()
    result = runner.invoke(app, command(data, run, tiny_config, "--steps", "1"))
    assert result.exit_code == 0, result.output
    assert load_model(run).metadata["training_steps"] == 1


def test_resume_writes_the_model_a_run_was_killed_before_writing(finished, data, tiny_config, tmp_path):
    """Killed after its last checkpoint but before model.safetensors: the identical command finishes it."""
    run = tmp_path / "run"
    run.mkdir()
    for name, content in snapshot(finished).items():
        if name != "model.safetensors":
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_bytes(content)
    result = runner.invoke(app, command(data, run, tiny_config, "--steps", "2", "--resume"))
    assert result.exit_code == 0, result.output
    expected, written = weights(finished), weights(run)
    assert expected.keys() == written.keys()
    assert all(torch.equal(expected[k], written[k]) for k in expected)


def test_sigkill_before_the_first_checkpoint_then_the_same_command_with_resume(data, tiny_config, tmp_path):
    run = tmp_path / "run"
    argv = command(data, run, tiny_config, "--steps", "3", "--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "medsynth", *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "config.yaml").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints" / "last.pt").exists()  # killed before its first checkpoint
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert load_model(run).metadata["training_steps"] == 3


# -- 2. resume with changed settings ---------------------------------------------------------------
@pytest.mark.parametrize(("change", "named"), [
    ({"model": {"channels": [16, 32, 64, 128]}}, ["model.channels"]),
    ({"model": {"lambda_l1": 10.0, "gan_loss": "vanilla"}}, ["model.lambda_l1", "model.gan_loss"]),
    ({"model": {"mr_scaling": "zscore"}, "train": {"batch_size": 2}}, ["model.mr_scaling", "train.batch_size"]),
    ({"patch": "32"}, ["model.patch_size"]),
    ({"options": ["--seed", "7"]}, ["train.seed"]),
])
def test_resume_refuses_changed_settings_and_leaves_the_run_folder_byte_identical(
        finished, data, tiny_config, tmp_path, change, named):
    run = tmp_path / "run"
    run.mkdir()
    for name, content in snapshot(finished).items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(content)
    before = snapshot(run)
    changed = tmp_path / "c.yaml"
    changed.write_text(yaml.safe_dump({section: {**TINY[section], **change.get(section, {})}
                                       for section in ("model", "train")}))
    result = runner.invoke(app, command(data, run, changed, "--steps", "3", "--resume", *change.get("options", []),
                                        patch=change.get("patch", "16")))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert "--resume cannot change" in lines[0] and "Traceback" not in result.output
    assert sorted(line.split(":")[0] for line in lines[1:]) == sorted(named)
    assert snapshot(run) == before


def test_resume_may_change_steps_cadences_and_device(finished, data, tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name, content in snapshot(finished).items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(content)
    result = runner.invoke(app, command(data, run, tiny_config, "--steps", "3", "--resume", "--ckpt-every", "1",
                                        "--val-every", "0", "--no-amp"))
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 3 and saved["train"]["ckpt_every"] == 1
    assert load_model(run).metadata["training_steps"] == 3


# -- 3. config types and ranges --------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "named"), [
    ({"train": {"steps": "abc"}}, ["'steps'"]),
    ({"train": {"batch_size": 2.5, "ema_decay": 1.5, "amp": "maybe"}}, ["'batch_size'", "'ema_decay'", "'amp'"]),
    ({"train": {"val_every": -1, "workers": "two"}}, ["'val_every'", "'workers'"]),
    ({"model": {"channels": [16, "x"], "dropout": "a", "gan_loss": "wgan"}},
     ["'channels.1'", "'dropout'", "'gan_loss'"]),
    ({"model": {"chanels": [8, 16]}}, ["'chanels'"]),
    ({"train": {"steps": 1.5}, "model": {"lambda_l1": "high"}}, ["'steps'", "'lambda_l1'"]),
    ({"train": 5}, ["'train:'"]),
])
def test_bad_settings_are_refused_one_line_each_before_anything_is_written(data, tmp_path, settings, named):
    config = tmp_path / "bad.yaml"
    merged = {section: (settings[section] if not isinstance(settings.get(section, {}), dict)
                        else {**TINY[section], **settings.get(section, {})}) for section in ("train", "model")}
    config.write_text(yaml.safe_dump(merged))
    run = tmp_path / "run"
    result = runner.invoke(app, command(data, run, config))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(named) and "Traceback" not in result.output
    assert all(sum(name in line for line in lines) == 1 for name in named), lines
    assert not run.exists()


def test_command_line_steps_out_of_range_is_refused(data, tiny_config, tmp_path):
    result = runner.invoke(app, command(data, tmp_path / "run", tiny_config, "--steps", "0"))
    assert result.exit_code == 2 and "'steps'" in result.stderr and "greater than or equal to 1" in result.stderr
    assert not (tmp_path / "run").exists()
