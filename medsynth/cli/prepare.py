"""``medsynth prepare RAW OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import Registration
from medsynth.cli.app import app, console


@app.command(epilog="Example: medsynth prepare raw/ data/ --register rigid --workers 2")
def prepare(
    raw: Annotated[Path, typer.Argument(exists=True, help="Raw cases: RAW/mr/ + RAW/ct/ (+ labels/), a datalist "
                                        "JSON, or per-case folders RAW/<case>/mr.*, ct.*.")],
    out: Annotated[Path, typer.Argument(help="Training set: OUT/mr, ct, mask (+ labels), overlays, report.")],
    register: Annotated[Registration, typer.Option(help="How the CT is moved onto the MR.")] = Registration.RIGID,
    n4: Annotated[bool, typer.Option("--n4/--no-n4", help="N4 bias-field correction of the MR.")] = True,
    crop_margin: Annotated[float | None, typer.Option("--crop-margin", metavar="MM", help="Crop to the body mask "
                                                      "plus this many mm. Default: keep the MR's grid.")] = None,
    workers: Annotated[int, typer.Option(help="Cases prepared in parallel.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo cases whose outputs exist.")] = False,
) -> None:
    """Align raw MR/CT pairs onto the MR grid: N4, registration, resampling, body mask, report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medsynth.prepare.report import report_table
    from medsynth.prepare.service import PrepareOptions
    from medsynth.prepare.service import prepare as prepare_cases

    options = PrepareOptions(register=register, n4=n4, crop_margin_mm=crop_margin, workers=workers,
                             overwrite=overwrite)
    with Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("cases", total=None)
        report = prepare_cases(raw, out, options, lambda done, total: bar.update(task, completed=done, total=total))
    console.print(report_table(report.outcomes, f"prepare -> {out}"))
    console.print(f"report: {report.path}")
    if report.failures:
        raise typer.Exit(1)
