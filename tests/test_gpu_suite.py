"""``benchmarks/gpu_suite.py --smoke``: the GPU suite's every item runs end to end on the CPU at tiny sizes and
writes its JSON and Markdown table (the full run needs a GPU; see docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_suite_runs_in_smoke_mode_and_writes_json_and_markdown(tmp_path):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_suite.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks",
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "gpu_suite.json").read_text())
    rows = document["rows"]
    training = [r for r in rows if r["item"].startswith("vox2vox train") and "steps_per_s" in r]
    # Every measured variant has the engine and the plain reference loop side by side.
    for variant in ("fp32", "bf16", "bf16+channels_last_3d"):
        paths = {r["path"] for r in training if r["variant"] == variant}
        assert paths == {"medsynth engine", "plain PyTorch + MONAI loop"}, variant
    assert all(r["steps_per_s"] > 0 for r in training)
    translation = [r for r in rows if r["item"].startswith("translate") and "AMP" not in r["item"]]
    assert {r["path"] for r in translation} == {"medsynth translate", "plain sliding_window_inference script"}
    amp = [r for r in rows if "AMP against fp32" in r["item"]]
    assert {r["variant"] for r in amp} == {"bf16", "fp16"}
    assert all("HU difference" in r["note"] or "unsupported" in r["note"] for r in amp)
    assert all(r["s_per_case"] > 0 for r in translation)
    assert any(r["item"].startswith("FastGAN") and r["steps_per_s"] > 0 for r in rows)
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.count("\n| ") == len(rows) + 1 and "torch.compile" in table
