"""Device, mixed precision and process-group setup, decided at run time (never at import)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medsynth.choices import DeviceChoice, parse_device
from medsynth.engine.threads import CpuShare, cpu_share, thread_choice
from medsynth.errors import UsageError


@dataclass(frozen=True)
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints, previews and models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 needs loss scaling to keep small gradients representable; bf16 does not."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision region for forward passes (a no-op in full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def pick_device(choice: DeviceChoice | str, local_rank: int = 0) -> torch.device:
    """The torch device of ``choice`` (:func:`medsynth.choices.parse_device`): ``auto`` is CUDA if available, else
    the CPU; ``cuda`` is GPU ``local_rank`` (each ``torchrun`` rank its own), ``cuda:N`` GPU N (refused under
    ``torchrun``, whose ranks choose their GPUs), ``mps`` an Apple GPU. A device this machine lacks is a
    :class:`UsageError` naming what it has."""
    try:
        value = parse_device(choice)
    except ValueError as error:
        raise UsageError(f"--device: {error}.") from error
    kind, _, index = value.partition(":")
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if kind == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UsageError("--device mps was asked for, but this machine has no Apple GPU (MPS); use --device cpu.")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {value} was asked for, but no CUDA device is available; use --device cpu.")
    count = torch.cuda.device_count()
    if not index:
        return torch.device("cuda", local_rank % count)
    if process_rank()[1] > 1:
        raise UsageError(f"--device {value}: under torchrun each rank takes its own GPU (LOCAL_RANK); give --device "
                         "cuda and choose the GPUs with CUDA_VISIBLE_DEVICES.")
    if int(index) >= count:
        raise UsageError(f"--device {value}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                         f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}).")
    return torch.device("cuda", int(index))


def pick_amp_dtype(device: torch.device, amp: bool, cpu_bf16: bool = False) -> torch.dtype | None:
    """CUDA: bf16 where the GPU supports it, else fp16. CPU: fp32 unless ``cpu_bf16`` asks for bf16 autocast
    (on CPUs with AVX-512 BF16/AMX 1.4-1.5x on a training step's networks and 3x on a 3D generator's
    inference forward, docs/performance.md; emulated, and slow, on others: see ``medsynth info``). Asked for,
    it is used on every CPU, so a run's numbers do not depend on the machine's instruction set."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 else None
    if device.type != "cuda" or not amp:  # MPS: fp32
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How a network computes, for reports: ``float32``, or the autocast dtype (``bfloat16``, ``float16``)."""
    return str(amp_dtype or torch.float32).removeprefix("torch.")


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: ``torchrun``'s RANK and WORLD_SIZE, (0, 1) in a plain process.

    The one place that reads them: training's runtime and the inference batches' share of the cases.
    """
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def make_runtime(device: DeviceChoice | str, amp: bool, cpu_bf16: bool = False) -> Runtime:
    """Build the runtime; under ``torchrun`` also join the process group (nccl on GPU, gloo on CPU)."""
    rank, world_size = process_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        torch.backends.cudnn.benchmark = True
    return Runtime(chosen, pick_amp_dtype(chosen, amp, cpu_bf16), rank, world_size, local_rank)


def barrier(runtime: Runtime) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if runtime.distributed:
        dist.barrier()


class SharedCpus:
    """This process's fair share of the CPUs while it computes on them (engine/threads.py: ``CpuShare``).

    ``with SharedCpus(device) as shared:`` claims the CPUs (nothing on a GPU or an unknown device (None), or
    when ``OMP_NUM_THREADS`` fixes the threads); ``shared.follow()`` — each training step, each case of a
    batch — sets torch's intra-op threads to the share, re-counting the neighbours every few seconds.
    """

    def __init__(self, device: torch.device | None) -> None:
        self.share = cpu_share() if device is not None and device.type == "cpu" else None
        self.threads = 0  # the share last taken by follow(); 0 before

    def __enter__(self) -> SharedCpus:
        if self.share is not None:
            self.share.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.share is not None:
            self.share.__exit__(*exc)

    def follow(self) -> None:
        """Take the current share in this (the computing) thread, the neighbours re-counted every few seconds."""
        if self.share is not None and (threads := self.share.refresh(thread_choice().threads, torch.get_num_threads(),
                                                                      time.monotonic())) is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()

    def adopt(self) -> None:
        """Take the share :meth:`follow` last set in another thread (a prefetch thread): each thread keeps the
        OpenMP thread count it had at its first parallel operation."""
        if self.share is not None and self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


@contextlib.contextmanager
def process_group_closed_at_exit(runtime: Runtime) -> Iterator[None]:
    """Tear the process group down when training ends, however it ends."""
    try:
        yield
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _share_now() -> str:
    share = CpuShare()
    others = share.neighbours() - 1
    return f"{others} other medsynth process{'es' if others != 1 else ''} on them now"


def device_report() -> dict[str, str]:
    """What ``medsynth info`` prints about compute."""
    cuda = torch.cuda.is_available()
    report = {
        "torch threads": f"{torch.get_num_threads()} ({thread_choice().reason})",
        "CPU sharing": ("off (OMP_NUM_THREADS fixes the threads)" if thread_choice().given else
                        f"on: trainings and CPU batches on the same CPUs split them ({_share_now()})"),
        "CUDA available": str(cuda),
        "device for auto": str(pick_device(DeviceChoice.AUTO)),
    }
    if cuda:
        report["GPU"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        report["bf16 supported"] = str(torch.cuda.is_bf16_supported())
        report["AMP dtype"] = str(pick_amp_dtype(torch.device("cuda"), True))
    else:
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        report["AMP"] = ("fp32 on the CPU unless cpu_bf16: true (this CPU computes bf16 "
                         f"{'natively' if native else 'by emulation, slower than fp32'}); bf16/fp16 autocast on CUDA")
    return report
