"""Folder batches shared by ``translate`` and ``attribute``: sharding, skip/resume, prefetch, report.

A batch never stops at a bad file: each case ends as written, skipped or failed (with its reason),
and the report lists them all. Outputs are written atomically, so re-running the same command
after an interruption redoes only the unfinished cases.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from medsynth.errors import InputError, MedsynthError, UsageError
from medsynth.io.cases import group_channels, resolve_inputs
from medsynth.io.image import read_image


class CaseStatus(StrEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class CaseResult:
    case: str
    status: CaseStatus
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class BatchReport:
    """Per-case outcome of a batch."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is CaseStatus.FAILED]

    def count(self, status: CaseStatus) -> int:
        return sum(r.status is status for r in self.results)

    def table(self, title: str) -> Table:
        table = Table(title=title)
        for column in ("case", "status", "seconds", "output / reason"):
            table.add_column(column)
        for r in self.results:
            detail = r.reason if r.status is CaseStatus.FAILED else ", ".join(Path(o).name for o in r.outputs)
            style = {"failed": "red", "skipped": "dim"}.get(r.status.value, "")
            table.add_row(r.case, f"[{style}]{r.status.value}[/]" if style else r.status.value,
                          f"{r.seconds:.1f}", detail)
        return table

    def write_json(self, path: Path) -> Path:
        document = {"written": self.count(CaseStatus.WRITTEN), "skipped": self.count(CaseStatus.SKIPPED),
                    "failed": self.count(CaseStatus.FAILED),
                    "cases": [{**asdict(r), "status": r.status.value} for r in self.results]}
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(document, indent=2))
        os.replace(partial, path)
        return path


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


def report_name(command: str, shard: str | None) -> str:
    """``translate_report.json``, or one per shard and rank so parallel writers never collide."""
    index, count = parse_shard(shard)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if count * world == 1:
        return f"{command}_report.json"
    return f"{command}_report_{index * world + rank}of{count * world}.json"


def select_cases(input_path: Path, shard: tuple[int, int], channels: Sequence[str] = ()) -> dict[str, Any]:
    """The cases of INPUT this process handles: shard i of N, then this rank's share under torchrun.

    With two or more ``channels`` (a multi-contrast model's file suffixes) each case is the tuple of
    its files ``<case>_0000``, ``<case>_0001``, ... in that order, and every case must have them all.
    """
    cases: dict[str, Any] = resolve_inputs(input_path)
    if len(channels) > 1:
        cases = group_channels(cases, channels)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    index, count = shard[0] * world + rank, shard[1] * world
    return {cid: path for i, (cid, path) in enumerate(sorted(cases.items())) if i % count == index}


def prepare_output_dir(out_dir: Path, input_path: Path) -> None:
    """Create OUT_DIR, refusing the input folder itself (outputs named by case would replace inputs)."""
    input_folder = input_path if input_path.is_dir() else input_path.parent
    if out_dir.resolve() == input_folder.resolve():
        raise UsageError(f"{out_dir}: is the input folder; choose another OUT_DIR so inputs stay untouched.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{out_dir}: cannot write outputs here ({error.strerror}); choose a writable folder.") \
            from error


def _prefetched(cases: dict[str, Path], load: Callable[[Path], Any]) -> Iterator[tuple[str, Future]]:
    """Load (read and preprocess) the next case in a background thread while the current one computes."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        items = list(cases.items())
        pending = pool.submit(load, items[0][1]) if items else None
        for i, (cid, _) in enumerate(items):
            current = pending
            pending = pool.submit(load, items[i + 1][1]) if i + 1 < len(items) else None
            yield cid, current


def run_batch(cases: dict[str, Path], outputs_of: Callable[[str], list[Path]], process: Callable[[str, Any],
              list[Path]], overwrite: bool, label: str, ndim: int = 3,
              load: Callable[[Path], Any] | None = None) -> BatchReport:
    """Apply ``process`` to every case not already done; one bad case is reported, the rest go on.

    ``load`` turns a path into what ``process`` takes (default: the image as a :class:`Volume`); it
    runs one case ahead in a background thread, so reading and preprocessing overlap the compute.
    """
    load = load or (lambda path: read_image(path, ndim))
    report = BatchReport()
    todo = {cid: p for cid, p in cases.items()
            if overwrite or not all(o.is_file() for o in outputs_of(cid))}
    for cid in sorted(set(cases) - set(todo)):
        report.results.append(CaseResult(cid, CaseStatus.SKIPPED, outputs=[str(o) for o in outputs_of(cid)],
                                         reason="exists (use --overwrite to redo)"))
    with _progress() as progress:
        task = progress.add_task(label, total=len(todo))
        for cid, future in _prefetched(todo, load):
            started = time.perf_counter()
            try:
                written = process(cid, future.result())
                report.results.append(CaseResult(cid, CaseStatus.WRITTEN, time.perf_counter() - started,
                                                 [str(w) for w in written]))
            except (InputError, MedsynthError) as error:
                report.results.append(CaseResult(cid, CaseStatus.FAILED, time.perf_counter() - started,
                                                 reason=str(error)))
            progress.advance(task)
    report.results.sort(key=lambda r: r.case)
    return report


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
