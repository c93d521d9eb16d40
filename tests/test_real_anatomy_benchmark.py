"""``benchmarks/real_anatomy.py``: a leave-one-patient-out run end to end on two tiny CT volumes (one fold per
held-out patient), then ``--collect`` with the per-patient rows, the means and the verdict against the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from medsynth.io import ImageMeta, write_ct

ROOT = Path(__file__).resolve().parents[1]
TINY = """train:
  steps: 3
  batch_size: 2
  val_every: 0
  ckpt_every: 100
  preview_every: 100
  device: cpu
model:
  dims: 2
  context_slices: 1
  min_spacing: 0.5
  mr_scaling: percentile
  patch_size: [32, 32]
  channels: [8, 16]
  gan_weight: 0
  tissue_weight: 1
  val_cases: 0
"""


def _chest(seed: int) -> np.ndarray:
    """A tiny trunk: soft tissue with a fat rim, two lungs and a spine, in HU."""
    x, y = np.meshgrid(np.arange(40) - 19.5, np.arange(36) - 17.5, indexing="ij")
    ct = np.full((40, 36), -1000.0)
    body = np.hypot(x / 17, y / 14) < 1
    ct[body], ct[np.hypot(x / 15, y / 12) < 1] = -100.0, 40.0
    ct[np.hypot((np.abs(x) - 7) / 5, y / 6) < 1] = -820.0
    ct[np.hypot(x, y - 8 - seed) < 3] = 700.0
    noise = np.random.default_rng(seed).normal(0, 10, (40, 36, 16))
    return np.repeat(ct[..., None], 16, axis=2) + noise


def _run(*args: object, script: str = "real_anatomy.py") -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})


def test_leave_one_patient_out_runs_end_to_end_and_collects_per_patient(tmp_path):
    cts = tmp_path / "ct"
    for seed, name in enumerate(("p1", "p2")):
        write_ct(cts / f"{name}.nii.gz", _chest(seed), ImageMeta.from_affine(np.diag([2.5, 2.5, 3.0, 1.0]),
                                                                            (40, 36, 16)))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    for held in ("p1", "p2"):
        done = _run(cts, tmp_path / held, "--hold-out", held, "--config", config)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads((tmp_path / held / "real_anatomy.json").read_text())
        assert result["test"] == [held] and set(result["patients"]["model"]) == {held}
        assert sorted(p.name for p in (tmp_path / held / "data" / "ct").iterdir()) == [
            f"{'p2' if held == 'p1' else 'p1'}.nii.gz"]  # the held-out patient never trains
    done = _run("--collect", tmp_path / "p1", tmp_path / "p2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("| model | p") for line in lines) == 2
    assert any(line.startswith("| **lookup table, mean** | all |") for line in lines)
    assert any(line.startswith("model beats the lookup table on every held-out patient: ") for line in lines)
    # The same folds through the precision benchmark: one row per fold, bf16 within a few HU of float32.
    done = _run(tmp_path / "p1", tmp_path / "p2", script="inference_precision.py")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| p")]
    assert [row[1].strip() for row in rows] == ["p1 (p1)", "p2 (p2)"]
    for row in rows:
        fp32, bf16 = (float(v) for v in row[4].split("/"))
        assert abs(fp32 - bf16) < 5.0
