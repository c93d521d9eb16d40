"""``medsynth evaluate``: score synthetic CTs against references (SPEC §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medsynth.choices import Protocol
from medsynth.cli.app import app, console, error_console


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Synthetic CT (HU): a volume or a folder of volumes.")],
    ref: Annotated[Path, typer.Argument(help="Reference CT: a volume or a folder, matched by case id.")],
    mask: Annotated[Path | None, typer.Option(
        "--mask", help="Body masks (folder or one file); default: the reference's Otsu body mask.")] = None,
    protocol: Annotated[Protocol, typer.Option(help="Metric definitions of this SynthRAD challenge.")] = (
        Protocol.synthrad2023),
    csv: Annotated[Path | None, typer.Option(help="Write per-case metrics to this CSV file.")] = None,
    json: Annotated[Path | None, typer.Option(
        help="Write per-case metrics, mean ± sd and failures to this JSON file.")] = None,
    series: Annotated[list[str] | None, typer.Option(
        "--series", help="Series Instance UID to read from a DICOM folder holding several (repeatable).")] = None,
) -> None:
    """Score synthetic CTs: MAE, PSNR, (MS-)SSIM, per-tissue MAE and bone Dice, per case and mean ± sd."""
    from medsynth.metrics.evaluate import evaluate_folders

    with console.status("evaluating") as status:
        report = evaluate_folders(pred, ref, mask, protocol,
                                  progress=lambda case: status.update(f"evaluating {escape(case)}"),
                                  outputs=(csv, json), series=tuple(series or ()))
    console.print(report.table())
    if report.ignored:
        console.print(f"ignored {len(report.ignored)} side products in {escape(str(pred))} (not predictions of a "
                      f"case of their own): {escape(', '.join(report.ignored))}")
    for warning in report.warnings:
        error_console.print(f"[bold yellow]warning:[/] {escape(warning.case)}: {escape(warning.reason)}")
    for failure in report.failures:
        error_console.print(f"[bold red]failed:[/] {escape(failure.case)}: {escape(failure.reason)}")
    if csv is not None:
        console.print(f"wrote {escape(str(report.to_csv(csv)))}")
    if json is not None:
        console.print(f"wrote {escape(str(report.to_json(json)))}")
    if report.failures:
        raise typer.Exit(1)
