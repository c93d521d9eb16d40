"""The README's main job, shortened to two training steps: every artefact appears and is sound."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from medsynth.cli import app


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "mae" in result.output.lower()
    for case in ("case_000", "case_001"):
        sct = nib.load(out / "sct" / f"{case}.nii.gz")
        mr = nib.load(out / "test" / "mr" / f"{case}.nii.gz")
        assert sct.get_data_dtype() == np.int16
        assert sct.shape == mr.shape and np.allclose(sct.affine, mr.affine, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["cases"]) == 2
    baseline = json.loads((out / "metrics_baseline.json").read_text())
    assert len(baseline["cases"]) == 2 and "no-context baseline" in result.output
    floor = json.loads((out / "metrics_floor.json").read_text())["summary"]
    assert 30 < floor["mae"]["mean"] < 60 and floor["bone_dice"]["mean"] > 0.95
    assert "floor: the phantom's oracle CT scores MAE" in result.output
    assert (out / "demo.png").stat().st_size > 1000
    assert (out / "run" / "model.safetensors").is_file()


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_default_steps_are_the_demo_library_default() -> None:
    import inspect

    from medsynth.cli.demo import demo
    from medsynth.demo import DEMO_STEPS, run_demo

    assert inspect.signature(run_demo).parameters["steps"].default == DEMO_STEPS
    assert inspect.signature(demo).parameters["steps"].default == DEMO_STEPS
