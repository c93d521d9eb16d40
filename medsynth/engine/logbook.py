"""What people see while a run trains: Rich progress with ETA, TensorBoard curves, PNG previews, a log."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medsynth.engine.family import Validation
from medsynth.engine.runtime import Runtime
from medsynth.io.outputs import write_text_atomically

LOG_FILENAME = "log.jsonl"
VALIDATION_DIRNAME = "validation"  # nnU-Net's fold_K/validation: the latest validation's table


class Logbook:
    """Progress bar, TensorBoard writer and JSON-lines log of a run; silent on ranks other than 0."""

    def __init__(self, run_dir: Path, runtime: Runtime, total_steps: int, start_step: int) -> None:
        self.run_dir = run_dir
        self.active = runtime.is_main
        self.total_steps, self.start_step = total_steps, start_step
        self._progress: Progress | None = None
        self._task = None
        self._writer = None
        self._log = None

    def __enter__(self) -> Logbook:
        if not self.active:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.run_dir / LOG_FILENAME, "a")
        self._writer = _tensorboard_writer(self.run_dir / "tensorboard")
        self._progress = Progress(
            TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.total_steps, completed=self.start_step, losses="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()
        if self._log is not None:
            self._log.close()

    def losses(self, step: int, losses: dict[str, float], learning_rates: dict[str, float], every: int) -> None:
        if not self.active:
            return
        summary = "  ".join(f"{k} {v:.3g}" for k, v in losses.items())
        self._progress.update(self._task, completed=step, losses=summary)
        if step % every and step != self.total_steps:
            return
        for name, value in losses.items():
            self._writer.add_scalar(f"loss/{name}", value, step)
        for name, value in learning_rates.items():
            self._writer.add_scalar(f"lr/{name}", value, step)
        self._record({"step": step, "losses": losses})

    def validation(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active or not metrics:
            return
        for name, value in metrics.items():
            self._writer.add_scalar(f"val/{name}", value, step)
        self._record({"step": step, "validation": metrics})
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self._progress.console.print(f"step {step}: validation {shown}")

    def preview(self, step: int, rows: list[list[np.ndarray]]) -> None:
        if not self.active or not rows:
            return
        from medsynth.viz import save_grid

        path = save_grid(self.run_dir / "previews" / f"step_{step:07d}.png", rows)
        image = np.asarray(_read_png(path))
        self._writer.add_image("preview", image, step, dataformats="HWC" if image.ndim == 3 else "HW")

    def _record(self, entry: dict) -> None:
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()


def _tensorboard_writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def write_validation(run_dir: Path, step: int, validation: Validation, source: str) -> Path:
    """The run's latest validation table, each file replaced atomically: ``RUN/validation/summary.json`` (step,
    ``source``: what was validated, the means and the per-case rows; non-finite values as null) and
    ``RUN/validation/cases.csv`` (one row per case, the metrics at full precision). Training writes it at every
    validation and a validation-only run (``train --val``) the same way. Returns the folder."""
    folder = Path(run_dir) / VALIDATION_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    document = {"step": step, "source": source, "means": _finite_or_null(validation.means),
                "cases": [_finite_or_null(row) for row in validation.cases]}
    write_text_atomically(folder / "summary.json", json.dumps(document, indent=2, allow_nan=False) + "\n")
    if validation.cases:
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=list(validation.cases[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()}
                         for row in validation.cases)
        write_text_atomically(folder / "cases.csv", table.getvalue())
    else:
        (folder / "cases.csv").unlink(missing_ok=True)  # a previous validation's rows would not be this one's
    return folder


def _finite_or_null(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
