"""Devices as nnU-Net users type them: auto, cpu, cuda, cuda:N, mps; a wrong or absent one is one line, before
anything is written (on this CPU-only machine: the parsing and the refusals)."""

from __future__ import annotations

import pytest
import torch
from tiny import one_error_line, run_cli

from medsynth.choices import parse_device
from medsynth.engine.config import TrainConfig
from medsynth.engine.runtime import pick_device
from medsynth.errors import UsageError
from medsynth.services.options import TranslateOptions


@pytest.mark.parametrize("typed", ["auto", "CPU", "cuda", "cuda:1", " Cuda:12 ", "mps"])
def test_the_devices_nnunet_users_type_parse(typed):
    assert parse_device(typed) == typed.strip().lower()


@pytest.mark.parametrize("typed", ["gpu", "cuda:", "cuda:x", "cpu:0", "mps:1", ""])
def test_anything_else_is_refused_naming_the_choices(typed):
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        parse_device(typed)
    with pytest.raises(UsageError, match="cuda:N"):
        TranslateOptions(device=typed)
    with pytest.raises(UsageError, match="device"):
        TrainConfig(device=typed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusals of a machine without CUDA")
def test_an_absent_gpu_is_one_line_naming_the_way_out():
    assert pick_device("cpu") == pick_device("auto") == torch.device("cpu")
    for typed in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match="no CUDA device is available; use --device cpu"):
            pick_device(typed)
    if not torch.backends.mps.is_available():
        with pytest.raises(UsageError, match="no Apple GPU"):
            pick_device("mps")


def test_a_mistyped_device_is_refused_by_the_cli_before_anything_runs(tmp_path):
    line = one_error_line(run_cli("translate", tmp_path, tmp_path, tmp_path / "out", "--device", "gpu1"))
    assert "--device" in line and "cuda:N" in line and not (tmp_path / "out").exists()
