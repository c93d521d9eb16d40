"""``prepare``: raw MR/CT exports -> an aligned training set, case by case, in parallel, with a report."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from medsynth.errors import MedsynthError, UsageError
from medsynth.io.outputs import prepare_output_dir
from medsynth.prepare.case import CaseOutcome, CaseSettings, output_paths, prepare_case
from medsynth.prepare.report import REPORT_NAME, previous_outcomes, write_report
from medsynth.prepare.sources import RawCase, find_raw_cases
from medsynth.prepare.steps import Registration


@dataclass
class PrepareOptions:
    """The options of ``medsynth prepare``."""

    register: Registration = Registration.RIGID
    n4: bool = True
    crop_margin_mm: float | None = None
    workers: int = 1
    overwrite: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.register = Registration(self.register)
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: give 1 or more parallel cases.")
        if self.crop_margin_mm is not None and self.crop_margin_mm < 0:
            raise UsageError(f"--crop-margin {self.crop_margin_mm} mm: give 0 or more millimetres.")

    def case_settings(self) -> CaseSettings:
        return CaseSettings(self.register, self.n4, self.crop_margin_mm, self.seed)


@dataclass
class PrepareReport:
    """Every case's outcome, in case order, and where the JSON report went."""

    outcomes: list[CaseOutcome]
    path: Path

    @property
    def failures(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def prepare(raw: Path, out: Path, options: PrepareOptions,
            progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Prepare every case of ``raw`` into ``out`` (``mr/``, ``ct/``, ``mask/``, ``labels/``, ``overlays/``).

    A case whose outputs all exist is skipped unless ``overwrite``; a case that fails is reported
    with its reason and the others go on. Inputs are only read. Raises :class:`InputError` or
    :class:`UsageError` (exit 2) before anything is written when ``raw`` or ``out`` is unusable.
    """
    raw, out = Path(raw), Path(out)
    cases = find_raw_cases(raw)
    prepare_output_dir(out, [raw], [p for c in cases for p in (*c.mr, c.ct, c.labels) if p is not None])
    previous = previous_outcomes(out / REPORT_NAME)
    outcomes: dict[str, CaseOutcome] = {}
    todo: list[RawCase] = []
    for case in cases:
        if not options.overwrite and all(p.is_file() for p in output_paths(case, out).values()):
            earlier = previous.get(case.case, CaseOutcome(case.case, "prepared"))
            outcomes[case.case] = replace(earlier, status="skipped", reason="exists (use --overwrite to redo)")
        else:
            todo.append(case)
    for done, (case, outcome) in enumerate(_run(todo, out, options), 1):
        outcomes[case.case] = outcome
        if progress:
            progress(done, len(todo))
    ordered = [outcomes[c.case] for c in cases]
    settings = {k: (v.value if isinstance(v, Registration) else v) for k, v in asdict(options).items()}
    return PrepareReport(ordered, write_report(out / REPORT_NAME, ordered, settings))


def _run(cases: list[RawCase], out: Path, options: PrepareOptions):
    settings = options.case_settings()
    if options.workers == 1 or len(cases) < 2:
        for case in cases:
            yield case, _guarded(case, out, settings)
        return
    workers = min(options.workers, len(cases))
    # spawn: a forked child would inherit the parent's thread pools (ITK, OpenMP) in whatever state.
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
        futures: list[tuple[RawCase, Future]] = [(c, pool.submit(_guarded, c, out, settings)) for c in cases]
        for case, future in futures:
            yield case, future.result()


def _limit_threads(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _guarded(case: RawCase, out: Path, settings: CaseSettings) -> CaseOutcome:
    """:func:`prepare_case`, with any failure turned into the case's report row."""
    try:
        return prepare_case(case, out, settings)
    except MedsynthError as error:
        return CaseOutcome(case.case, "failed", reason=str(error))
    except RuntimeError as error:  # ITK reports what it cannot do (e.g. no overlap to sample) this way
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return CaseOutcome(case.case, "failed", reason=f"{case.ct}: {lines[-1] if lines else type(error).__name__}")
