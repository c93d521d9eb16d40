"""``medsynth phantom``: write a digital-head data set for one model family (SPEC §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medsynth.cli.app import app, console
from medsynth.phantom.anatomy import DEFAULT_SHAPE, DEFAULT_SPACING
from medsynth.phantom.kinds import DEFAULT_CASES, PhantomKind, write_phantom


@app.command()
def phantom(
    kind: Annotated[PhantomKind, typer.Argument(
        help="paired (MR+CT), unpaired (MR, CT of other subjects), attribution (control, patient, "
             "effect) or slices (2D axial CT).")],
    out: Annotated[Path, typer.Argument(help="Output folder (new or empty unless --overwrite).")],
    cases: Annotated[int, typer.Option(help="Subjects per group; slices: number of heads.")] = DEFAULT_CASES,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Grid size X Y Z in voxels.")] = DEFAULT_SHAPE,
    spacing: Annotated[float, typer.Option(help="Isotropic voxel size in mm.")] = DEFAULT_SPACING,
    seed: Annotated[int, typer.Option(help="Data set seed; the same seed writes identical files.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty folder.")] = False,
    t2: Annotated[bool, typer.Option("--t2", help="paired: add a T2-like MR; channels mr/<case>_0000 (T1) "
                                     "and mr/<case>_0001 (T2).")] = False,
) -> None:
    """Write a deterministic phantom data set: heads with CT, T1-like MR, labels and patient versions."""
    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("subjects", total=None)
        summary = write_phantom(kind, out, cases=cases, shape=shape, spacing=spacing, seed=seed,
                                overwrite=overwrite, t2=t2,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"[green]wrote[/] {escape(summary.describe())}")
