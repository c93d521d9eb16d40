"""Scaling out on a CPU: a Slurm job array's tasks mapped to shards, the merge of their reports, and a
two-"node" torchrun (two launchers meeting at a c10d rendezvous) that trains one model and shards a batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import InputError
from medsynth.modelfile import load_model
from medsynth.phantom.anatomy import make_head
from medsynth.services.batch import BatchCase, BatchReport, CaseStatus
from medsynth.services.reports import merge_reports
from medsynth.training import train

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"steps": 2, "batch_size": 1, "val_every": 0, "ckpt_every": 100, "preview_every": 100, "device": "cpu"}
MODEL = {"patch_size": [16, 16, 16], "channels": [8, 16], "disc_channels": 8, "disc_layers": 2}
CASES = [f"case_{i}" for i in range(5)]


def _env(**extra: str) -> dict[str, str]:
    # The worktree's medsynth first, whatever the venv has installed; one thread per process.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def setting(tmp_path_factory, paired_phantom, write_volume) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scaling")
    data = paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    train("pix2pix", data, root / "run", TRAIN, MODEL)
    for i, case in enumerate(CASES):
        write_volume(root / "mr" / f"{case}.nii.gz", make_head(20 + i, (14, 16, 12), 7.0).mr,
                     np.diag([7.0, 7.0, 7.0, 1.0]))
    return root / "run", root / "mr"


def _merge(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/merge_shard_reports.py"), str(out)],
                          capture_output=True, text=True, env=_env(), timeout=120)


def test_a_slurm_array_translates_each_case_once_and_its_reports_merge(setting, tmp_path):
    model, inputs = setting
    out = tmp_path / "sct"
    medsynth = f"{sys.executable} -m medsynth"
    for task in (1, 2, 3):  # sbatch --array=1-3: tasks need not start at 0
        done = subprocess.run(["bash", str(ROOT / "scripts/translate_array.sbatch")], capture_output=True, text=True,
                              timeout=300, env=_env(MODEL=str(model), INPUT=str(inputs), OUT_DIR=str(out),
                                                    MEDSYNTH=medsynth, SLURM_ARRAY_TASK_ID=str(task),
                                                    SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_COUNT="3",
                                                    SLURM_CPUS_PER_TASK="4", TRANSLATE_ARGS="--device cpu"))
        assert done.returncode == 0, done.stderr[-2000:]
    shards = sorted(p.name for p in out.glob("translate_report_*.json"))
    assert shards == ["translate_report_0of3.json", "translate_report_1of3.json", "translate_report_2of3.json"]
    per_shard = [{c["case"] for c in json.loads((out / name).read_text())["cases"]} for name in shards]
    assert sorted(c for cases in per_shard for c in cases) == CASES  # a partition of the cases

    done = _merge(out)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((out / "translate_report.json").read_text())
    assert merged["written"] == len(CASES) and [c["case"] for c in merged["cases"]] == CASES

    single = tmp_path / "single"
    result = CliRunner().invoke(app, ["translate", str(model), str(inputs), str(single), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    for case in CASES:
        np.testing.assert_array_equal(nib.load(out / f"{case}.nii.gz").get_fdata(),
                                      nib.load(single / f"{case}.nii.gz").get_fdata())

    (out / "translate_report_1of3.json").unlink()
    done = _merge(out)
    assert done.returncode == 1 and "missing shard report(s): 1/3" in done.stdout


def _report(path: Path, *results: BatchCase) -> None:
    BatchReport(list(results)).write_json(path)


def test_merging_keeps_each_case_once_with_its_most_complete_outcome(tmp_path):
    _report(tmp_path / "translate_report_0of2.json", BatchCase("a", CaseStatus.FAILED, reason="out of memory"),
            BatchCase("b", CaseStatus.WRITTEN, 1.0, ["b.nii.gz"]))
    _report(tmp_path / "translate_report_1of2.json", BatchCase("a", CaseStatus.WRITTEN, 2.0, ["a.nii.gz"]),
            BatchCase("c", CaseStatus.FAILED, reason="not an image"))
    merged = merge_reports(tmp_path)
    assert merged.missing == []
    assert [(r.case, r.status.value) for r in merged.report.results] == [("a", "written"), ("b", "written"),
                                                                         ("c", "failed")]
    document = json.loads((tmp_path / "translate_report.json").read_text())
    assert (document["written"], document["failed"]) == (2, 1)

    _report(tmp_path / "translate_report_0of4.json", BatchCase("d", CaseStatus.WRITTEN))
    with pytest.raises(InputError, match="different splits"):
        merge_reports(tmp_path)
    with pytest.raises(InputError, match="no translate_report"):
        merge_reports(tmp_path / "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/translate_report_0of1.json").write_text("{")
    with pytest.raises(InputError, match="not a readable"):
        merge_reports(tmp_path / "broken")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_nodes(args: list[str], tmp_path: Path, tag: str) -> None:
    """The same command launched by two torchrun 'nodes' (one process each) meeting at one rendezvous."""
    endpoint = f"127.0.0.1:{_free_port()}"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--rdzv_id={tag}", "-m", "medsynth", *args]
    logs = [open(tmp_path / f"{tag}_node{n}.log", "w") for n in range(2)]  # noqa: SIM115  (closed below)
    nodes = [subprocess.Popen(launch, stdout=log, stderr=subprocess.STDOUT, env=_env()) for log in logs]
    codes = [node.wait(timeout=300) for node in nodes]
    for log in logs:
        log.close()
    assert codes == [0, 0], [(tmp_path / f"{tag}_node{n}.log").read_text()[-2000:] for n in range(2)]


@pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="torch without distributed")
def test_two_torchrun_nodes_train_one_model_and_shard_a_batch(setting, tmp_path, paired_phantom):
    _, inputs = setting
    data = paired_phantom(tmp_path / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  patch_size: [16, 16, 16]\n  channels: [8, 16]\n  disc_channels: 8\n"
                      "  disc_layers: 2\n")
    run = tmp_path / "run"
    _two_nodes(["train", "pix2pix", str(data), "--out", str(run), "--config", str(config), "--steps", "3",
                "--batch-size", "1", "--device", "cpu", "--val-every", "0"], tmp_path, "train")
    assert load_model(run).metadata["training_steps"] == 3  # rank 0 wrote the model, split and log
    assert (run / "split.json").is_file() and (run / "log.jsonl").is_file()
    assert not list(run.glob(".*partial*"))

    out = tmp_path / "sct"
    _two_nodes(["translate", str(run), str(inputs), str(out), "--device", "cpu"], tmp_path, "translate")
    per_rank = [{c["case"] for c in json.loads((out / f"translate_report_{r}of2.json").read_text())["cases"]}
                for r in range(2)]
    assert not per_rank[0] & per_rank[1] and sorted(per_rank[0] | per_rank[1]) == CASES
    merged = merge_reports(out)
    assert merged.missing == [] and [r.case for r in merged.report.results] == CASES
    assert all((out / f"{case}.nii.gz").is_file() for case in CASES)
