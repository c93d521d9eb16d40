"""``medsynth phantom KIND OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medsynth.choices import PhantomKind
from medsynth.cli.app import app, console

# The library's defaults, written out so that --help answers without importing numpy (checked by a test).
SHAPE_HELP = "Grid size X Y Z in voxels (--shape 80 96 80). Default: 80 96 80."
SPACING_HELP = "Isotropic voxel size in mm. Default: 2.0."
CASES_HELP = "Subjects per group; slices: number of heads. Default: 8."


@app.command(epilog="Example: medsynth phantom paired data/ --cases 8 --shape 80 96 80")
def phantom(
    kind: Annotated[PhantomKind, typer.Argument(
        case_sensitive=False,
        help="paired (MR+CT), unpaired (MR, CT of other subjects), attribution (control, patient, "
             "effect), slices (2D axial CT) or synthrad (paired, as <case>/mr.mha, ct.mha, mask.mha).")],
    out: Annotated[Path, typer.Argument(help="Output folder (new or empty unless --overwrite).")],
    cases: Annotated[int | None, typer.Option(help=CASES_HELP)] = None,
    shape: Annotated[tuple[int, int, int] | None, typer.Option(metavar="X Y Z", help=SHAPE_HELP)] = None,
    spacing: Annotated[float | None, typer.Option(metavar="MM", help=SPACING_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Data set seed; the same seed writes identical files.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty folder.")] = False,
    t2: Annotated[bool, typer.Option("--t2", help="paired, unpaired: add a T2-like MR; channels "
                                     "mr/<case>_0000 (T1) and mr/<case>_0001 (T2).")] = False,
) -> None:
    """Write a deterministic phantom data set: heads with CT, T1-like MR, labels and patient versions."""
    from medsynth.phantom.anatomy import DEFAULT_SHAPE, DEFAULT_SPACING
    from medsynth.phantom.kinds import DEFAULT_CASES, write_phantom

    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("subjects", total=None)
        summary = write_phantom(kind, out, cases=DEFAULT_CASES if cases is None else cases,
                                shape=shape or DEFAULT_SHAPE, spacing=DEFAULT_SPACING if spacing is None else spacing,
                                seed=seed, overwrite=overwrite, t2=t2,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"[green]wrote[/] {escape(summary.describe())}")
