"""Threads for the CPUs this process may use: OMP_NUM_THREADS wins, else the affinity mask capped by the cgroup's
CPU quota (v2 and v1), never below one; ``medsynth info`` says what was chosen and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.engine.threads import CpuShare, choose_threads, cpu_quota

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


def test_processes_on_the_same_cpus_split_them_and_a_lone_one_takes_them_back(tmp_path):
    cpus = frozenset({0, 1})
    with CpuShare(cpus, tmp_path, every_s=0.0) as mine:
        assert mine.threads(limit=2) == 2 and mine.refresh(2, current=1, now=0.0) == 2  # alone: both cores
        neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (tmp_path / str(neighbour.pid)).write_text("1 2")  # overlaps CPU 1
            assert mine.neighbours() == 2 and mine.refresh(2, current=2, now=1.0) == 1
            (tmp_path / "999999999").write_text("0 1")  # a claim whose process died: ignored
            assert mine.threads(limit=2) == 1
            (tmp_path / str(neighbour.pid)).write_text("4 5")  # other CPUs: no neighbour
            assert mine.threads(limit=2) == 2
        finally:
            neighbour.kill()
            neighbour.wait()
        (tmp_path / str(neighbour.pid)).write_text("0 1")  # it has stopped: both cores back
        assert mine.refresh(2, current=1, now=2.0) == 2
        assert mine.refresh(2, current=2, now=3.0) is None  # no change, nothing to do
    assert not (tmp_path / str(os.getpid())).exists()  # the claim goes with the process's share


def test_a_share_is_checked_every_few_seconds_not_every_step(tmp_path):
    with CpuShare(frozenset({0, 1}), tmp_path, every_s=5.0) as mine:
        assert mine.refresh(2, current=1, now=100.0) == 2
        assert mine.refresh(2, current=1, now=103.0) is None  # within 5 s: not looked at
        assert mine.refresh(2, current=1, now=106.0) == 2


def test_given_threads_are_never_shared_out(monkeypatch):
    import medsynth.engine.threads as threads

    monkeypatch.setattr(threads, "_applied", [threads.ThreadChoice(3, "OMP_NUM_THREADS is set", given=True)])
    assert threads.cpu_share() is None
    monkeypatch.setattr(threads, "_applied", [threads.ThreadChoice(2, "the CPUs this process may run on")])
    assert isinstance(threads.cpu_share(), CpuShare)


@pytest.fixture
def shared_claims(tmp_path, monkeypatch):
    """CPU sharing on (as without OMP_NUM_THREADS) with claims in ``tmp_path``; torch's threads restored after."""
    import torch

    import medsynth.engine.threads as threads

    monkeypatch.setattr(threads, "_CLAIMS", tmp_path)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the CLI re-chooses: threads of its own, shared
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_applied", [threads.ThreadChoice(AFFINITY, "the CPUs this process may run on")])
    before = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(before)


def test_a_cpu_batch_claims_its_cpus_and_takes_its_share(shared_claims):
    """Each case of a CPU batch runs with the CPUs ÷ live claims (a neighbour on the same CPUs halves them);
    the claim exists while the batch runs and is gone after; a GPU batch claims nothing."""
    import torch

    from medsynth.services.batch import run_batch

    seen: list[tuple[int, bool]] = []
    loaded: list[int] = []

    def process(case, data):
        seen.append((torch.get_num_threads(), (shared_claims / str(os.getpid())).exists()))
        return []

    def load(path):  # in a prefetch thread
        loaded.append(torch.get_num_threads())
        return path

    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (shared_claims / str(neighbour.pid)).write_text(" ".join(map(str, os.sched_getaffinity(0))))
        run_batch({"a": Path("a"), "b": Path("b")}, lambda case: [], process, True, "test", load=load,
                  device=torch.device("cpu"))
        assert seen == [(max(1, AFFINITY // 2), True)] * 2
        assert loaded == [max(1, AFFINITY // 2)] * 2
        run_batch({"c": Path("c")}, lambda case: [], process, True, "test", load=lambda path: path,
                  device=torch.device("cuda"))
        assert seen[-1][1] is False
    finally:
        neighbour.kill()
        neighbour.wait()
    assert not (shared_claims / str(os.getpid())).exists()


def test_translate_shares_the_cpus(shared_claims, tmp_path_factory, paired_phantom, monkeypatch):
    """``translate --device cpu`` follows the share (the same claim as a training), not the threads it started with."""
    import torch
    from tiny import run_cli, tiny_run

    root = tmp_path_factory.mktemp("share")
    data = paired_phantom(root / "data", cases=3, shape=(24, 28, 24), spacing=6.0)
    run = tiny_run(data, root / "run")
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n, original=torch.set_num_threads: (calls.append(n),
                                                                                              original(n)))
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (shared_claims / str(neighbour.pid)).write_text(" ".join(map(str, os.sched_getaffinity(0))))
        torch.set_num_threads(AFFINITY)
        calls.clear()
        result = run_cli("translate", run, data / "mr", root / "sct", "--device", "cpu")
        assert result.exit_code == 0, result.output
    finally:
        neighbour.kill()
        neighbour.wait()
    assert calls == ([AFFINITY // 2] if AFFINITY > 1 else [])


@pytest.mark.skipif(AFFINITY < 2, reason="a share below the whole needs two CPUs")
def test_a_prefetch_thread_adopts_the_share_set_in_the_computing_thread(shared_claims):
    """OpenMP keeps each thread's count from its first parallel operation: a prefetch thread that started
    alone must take the halved share when a neighbour arrives (``SharedCpus.adopt``)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from medsynth.engine.runtime import SharedCpus

    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with SharedCpus(torch.device("cpu")) as cpus, ThreadPoolExecutor(1) as prefetch:
            cpus.share.every_s = 0.0  # re-count at every follow()
            cpus.follow()
            assert cpus.threads == AFFINITY
            assert prefetch.submit(lambda: (cpus.adopt(), torch.get_num_threads())[1]).result() == AFFINITY
            (shared_claims / str(neighbour.pid)).write_text(" ".join(map(str, os.sched_getaffinity(0))))
            cpus.follow()
            assert cpus.threads == torch.get_num_threads() == AFFINITY // 2
            assert prefetch.submit(lambda: (cpus.adopt(), torch.get_num_threads())[1]).result() == AFFINITY // 2
    finally:
        neighbour.kill()
        neighbour.wait()
