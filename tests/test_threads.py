"""Threads for the CPUs this process may use: OMP_NUM_THREADS wins, else the affinity mask capped by the cgroup's
CPU quota (v2 and v1), never below one; ``medsynth info`` says what was chosen and why."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.engine.threads import choose_threads, cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def test_omp_num_threads_wins(tmp_path):
    assert choose_threads({"OMP_NUM_THREADS": "3"}, tmp_path).threads == 3


def test_a_cgroup_v2_quota_caps_the_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert cpu_quota(tmp_path) == 0.5
    choice = choose_threads({}, tmp_path)
    assert choice.threads == 1 and ("quota" in choice.reason or AFFINITY == 1)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None and choose_threads({}, tmp_path).threads == AFFINITY


def test_a_cgroup_v1_quota_and_no_cgroup(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    assert cpu_quota(tmp_path) == 1.5 and choose_threads({}, tmp_path).threads == min(2, AFFINITY)
    assert cpu_quota(tmp_path / "absent") is None and choose_threads({}, tmp_path / "absent").threads == AFFINITY


def test_info_says_how_many_threads_and_why():
    from medsynth.engine.threads import thread_choice

    result = CliRunner().invoke(app, ["info"], env={"COLUMNS": "200"})
    line = next(line for line in result.output.splitlines() if "torch threads" in line)
    assert result.exit_code == 0 and f"({thread_choice().reason})" in line, line
