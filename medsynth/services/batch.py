"""Folder batches shared by ``translate`` and ``attribute``: sharding, skip/resume, prefetch, report.

A batch never stops at a bad case: whatever goes wrong with one (an unreadable file, a GPU out of
memory, any exception) ends that case as failed with its reason, and the batch goes on; a GPU
out-of-memory error is first retried with one window at a time and blending on the CPU. Each case
ends as written, skipped or failed, and the report lists them all. Outputs are written atomically,
so re-running the same command after an interruption redoes only the unfinished cases (and removes
the temporaries a killed write of theirs left).
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from medsynth.engine.runtime import SharedCpus
from medsynth.errors import InputError, MedsynthError, UsageError
from medsynth.inference.predictor import reduced_memory
from medsynth.io.casefolders import case_folder_roles
from medsynth.io.cases import group_channels, list_images
from medsynth.io.image import read_image, read_stamp
from medsynth.io.inputs import resolve_inputs
from medsynth.io.outputs import remove_partials_of, write_text_atomically


class CaseStatus(StrEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class BatchCase:
    """One case of a batch (translate, attribute): its outcome, time, outputs and what it says."""

    case: str
    status: CaseStatus
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    reason: str = ""
    warning: str = ""  # written, but something about the input looks wrong (e.g. a CT given as MR)
    input_check: str = ""  # how far the input lies from the model's training MR (data/profile.py)
    expected_error: str = ""  # the calibrated expected error's QA line (services/translate.expected_error_qa)
    predicted_mae_hu: tuple[float, float, float] | None = None  # (predicted, low, high) with a calibrated spread
    precision: str = ""  # a case written by this run: its networks' arithmetic (float32, bfloat16, float16)


@dataclass
class BatchReport:
    """Per-case outcome of a batch."""

    results: list[BatchCase] = field(default_factory=list)
    model: str | None = None  # fingerprint of the model whose outputs these are (modelfile.model_fingerprint)

    @property
    def failures(self) -> list[BatchCase]:
        return [r for r in self.results if r.status == CaseStatus.FAILED]

    def count(self, status: CaseStatus | str) -> int:
        """How many cases ended with ``status`` (an enum member or its value, e.g. ``"written"``)."""
        return sum(r.status == CaseStatus(status) for r in self.results)

    def table(self, title: str) -> Table:
        table = Table(title=title)
        for column in ("case", "status", "seconds", "output / reason"):
            table.add_column(column)
        for r in self.results:
            detail = r.reason if r.status == CaseStatus.FAILED else ", ".join(Path(o).name for o in r.outputs)
            detail += " [yellow](warning below)[/]" if r.warning else ""
            style = {"failed": "red", "skipped": "dim"}.get(r.status.value, "")
            table.add_row(r.case, f"[{style}]{r.status.value}[/]" if style else r.status.value,
                          f"{r.seconds:.1f}", detail)
        return table

    def write_json(self, path: Path) -> Path:
        document = {"model": self.model,
                    "written": self.count(CaseStatus.WRITTEN), "skipped": self.count(CaseStatus.SKIPPED),
                    "failed": self.count(CaseStatus.FAILED),
                    "cases": [{**asdict(r), "status": r.status.value} for r in self.results]}
        return write_text_atomically(path, json.dumps(document, indent=2))


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` (0-based i) -> (i, N); None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard '{text}': write it as I/N, e.g. 0/4 for the first of four shards.") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard '{text}': I must lie in 0..N-1.")
    return index, count


def report_name(command: str, shard: str | None, ranks: tuple[int, int]) -> str:
    """``translate_report.json``, or one per shard and rank so parallel writers never collide; ``ranks``:
    this process's (rank, world size) (``engine.runtime.process_rank``)."""
    index, count = parse_shard(shard)
    rank, world = ranks
    if count * world == 1:
        return f"{command}_report.json"
    return f"{command}_report_{index * world + rank}of{count * world}.json"


def select_cases(input_path: Path, shard: tuple[int, int], ranks: tuple[int, int], role: str = "mr",
                 outputs_of: Callable[[str], list[Path]] | None = None, channels: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """The cases of INPUT this process handles: shard i of N, then this rank's share of it under torchrun
    (``ranks``: the (rank, world size) of ``engine.runtime.process_rank``).

    ``role``: the image taken from each SynthRAD case folder. With ``outputs_of``, two cases (of any
    shard) that would write one output path are an error before anything is written. With two or
    more ``channels`` (a multi-contrast model's file suffixes) each case is the tuple of its files
    ``<case>_0000``, ``<case>_0001``, ... in that order, and every case must have them all.
    """
    cases: dict[str, Any] = resolve_inputs(input_path, role)
    if len(channels) > 1:
        cases = group_channels(cases, channels)
    if outputs_of is not None:
        check_distinct_outputs(cases, outputs_of)
    rank, world = ranks
    index, count = shard[0] * world + rank, shard[1] * world
    return {cid: path for i, (cid, path) in enumerate(sorted(cases.items())) if i % count == index}


def check_distinct_outputs(cases: dict[str, Path], outputs_of: Callable[[str], list[Path]]) -> None:
    """Refuse, in one line, inputs whose outputs would land on one path (``a`` with ``--uncertainty``
    writes ``a_std.nii.gz``, the very output of an input named ``a_std``); paths compare case-blind, as
    on the file systems of macOS and Windows."""
    owner: dict[str, tuple[str, Path]] = {}
    for case in sorted(cases):
        for output in outputs_of(case):
            key = str(output).lower()
            if key in owner and owner[key][0] != case:
                other, first = owner[key]
                raise UsageError(f"{cases[other]} and {cases[case]}: both would be written to {first.name}; rename "
                                 "one input (nothing was written).")
            owner[key] = (case, output)


def case_masks(folder: Path | None) -> dict[str, Path] | None:
    """``--mask DIR``: case id -> mask file (None without the option)."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: --mask needs a folder of masks named by case id.")
    return list_images(Path(folder))


def mask_of(case: str, masks: dict[str, Path], folder: Path | None) -> Path:
    """The mask of ``case``; a missing one fails that case (exit 2 when INPUT is one image)."""
    if case not in masks:
        raise InputError(f"{folder}: holds no mask for case '{case}'; add it (same name as the image) or leave "
                         "out --mask.")
    return masks[case]


def is_single_input(input_path: Path, cases: dict[str, Path]) -> bool:
    """True when INPUT names one image or series itself, or one SynthRAD case folder (not a folder of them)."""
    path = Path(input_path)
    return list(cases.values()) == [path] or (len(cases) == 1 and case_folder_roles(path) is not None)


def _prefetched(cases: dict[str, Path], load: Callable[[Path], Any], workers: int = 1
                ) -> Iterator[tuple[str, Future]]:
    """Load (read and preprocess) the next ``workers`` cases in background threads while the current
    one computes; at most ``workers`` loaded cases wait in memory."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        items = list(cases.items())
        pending = deque(pool.submit(load, path) for _, path in items[:workers])
        for i, (cid, _) in enumerate(items):
            current = pending.popleft()
            if i + workers < len(items):
                pending.append(pool.submit(load, items[i + workers][1]))
            yield cid, current


def output_stamp(fingerprint: str, label: str) -> str:
    """What every output says of the model that made it: ``medsynth model <fingerprint> (<family> <run>)``."""
    return f"medsynth model {fingerprint} ({label})"


def made_by(output: Path) -> str | None:
    """The model fingerprint stamped into an existing output (image file or DICOM series folder), if any."""
    text = read_stamp(output)
    found = re.search(r"medsynth model ([0-9a-f]{16})", text or "")
    return found[1] if found else None


@dataclass(frozen=True)
class Provenance:
    """Which model a batch's outputs come from (``model``: its fingerprint) and how to read it back from an
    existing output (``made_by``: the fingerprint stamped into it, None when there is none)."""

    model: str
    made_by: Callable[[Path], str | None]

    def check(self, existing: list[Path]) -> None:
        """Refuse (:class:`UsageError`, one line) when an existing output was not made by this model."""
        foreign = [(path, self.made_by(path)) for path in existing]
        foreign = [(path, found) for path, found in foreign if found != self.model]
        if foreign:
            path, found = foreign[0]
            maker = f"model {found}" if found else "an unknown model"
            raise UsageError(f"{path}: exists, made by {maker}, not by this model ({self.model}); "
                             f"{len(foreign)} output(s) like it. Add --overwrite to replace them or choose "
                             "another output folder.")


def run_batch(cases: dict[str, Path], outputs_of: Callable[[str], list[Path]], process: Callable[[str, Any],
              list[Path]], overwrite: bool, label: str, ndim: int = 3,
              load: Callable[[Path], Any] | None = None, single: bool = False, workers: int = 1,
              provenance: Provenance | None = None, device: torch.device | None = None,
              precision: str = "") -> BatchReport:
    """Apply ``process`` to every case not already done; one bad case is reported, the rest go on.

    With ``provenance`` a case is done only when its outputs were made by the same model; an existing
    output of another model (or of none known) is a :class:`UsageError` before anything is written, unless
    ``overwrite``: stale outputs are never passed off as fresh ones.

    ``load`` turns a path into what ``process`` takes (default: the image as a :class:`Volume`); it
    runs ``workers`` cases ahead in background threads, so reading and preprocessing overlap the compute.
    Any exception of a case (``Exception``, not Ctrl-C) fails that case with its reason; a CUDA
    out-of-memory error is retried once under :func:`reduced_memory`. With ``single`` (INPUT is one
    image) an unusable input raises its :class:`InputError` (exit 2, one line) instead of a report.
    On a CPU ``device`` the batch takes its fair share of the CPUs beside other medsynth jobs, re-counted
    before each case (``engine.runtime.SharedCpus``), in the prefetch threads too. ``precision`` is recorded
    with each case this run writes (a skipped case was made by an earlier run, perhaps in another).
    """
    load = load or (lambda path: read_image(path, ndim))
    report = BatchReport(model=provenance.model if provenance else None)
    todo = {cid: p for cid, p in cases.items()
            if overwrite or not all(o.exists() for o in outputs_of(cid))}
    if provenance is not None and not overwrite:
        provenance.check([outputs_of(cid)[0] for cid in sorted(set(cases) - set(todo))])
    for cid in todo:  # a killed earlier run may have left temporaries of these cases' outputs
        remove_partials_of(outputs_of(cid))
    for cid in sorted(set(cases) - set(todo)):
        report.results.append(BatchCase(cid, CaseStatus.SKIPPED, outputs=[str(o) for o in outputs_of(cid)],
                                         reason="exists" + (", made by this model" if provenance else "")
                                         + " (use --overwrite to redo)"))
    with _progress(transient=single) as progress, SharedCpus(device) as cpus:
        task = progress.add_task(label, total=len(todo))
        cpus.follow()  # before the first load: a prefetch thread keeps the threads of its first operation

        def shared_load(item: Any) -> Any:
            cpus.adopt()
            return load(item)

        for cid, future in _prefetched(todo, shared_load, workers):
            cpus.follow()
            started = time.perf_counter()
            try:
                written = _run_case(process, cid, future)
                report.results.append(BatchCase(cid, CaseStatus.WRITTEN, time.perf_counter() - started,
                                                 [str(w) for w in written], precision=precision))
            except Exception as error:
                if single and isinstance(error, InputError):
                    raise
                report.results.append(BatchCase(cid, CaseStatus.FAILED, time.perf_counter() - started,
                                                 reason=failure_reason(error)))
            progress.advance(task)
    report.results.sort(key=lambda r: r.case)
    return report


def _run_case(process: Callable[[str, Any], list[Path]], cid: str, future: Future) -> list[Path]:
    data = future.result()
    try:
        return process(cid, data)
    except torch.cuda.OutOfMemoryError:
        pass  # leave the except block first, so the traceback no longer holds the failed attempt's tensors
    torch.cuda.empty_cache()
    with reduced_memory():
        return process(cid, data)


def failure_reason(error: Exception) -> str:
    """One line for the report: medsynth's own message, or the exception's type and first line."""
    if isinstance(error, MedsynthError):
        return str(error)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return ("GPU out of memory, even with one window at a time and blending on the CPU; free the GPU or "
                "use --device cpu.")
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _progress(transient: bool = False) -> Progress:
    """A bar with ETA that stays in the log; ``transient`` (one input, whose refusal is one line) leaves none."""
    return Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=transient)
