"""``medsynth evaluate``: score synthetic CTs against references (SPEC §5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from medsynth.choices import Modality, Protocol
from medsynth.cli.app import app, console, error_console
from medsynth.dose import require_dose_extra
from medsynth.errors import UsageError

if TYPE_CHECKING:
    from medsynth.metrics.report import EvaluationReport


@app.command(epilog="Example: medsynth evaluate sct/ Task1/brain --protocol synthrad2025 --csv metrics.csv")
def evaluate(
    pred: Annotated[Path, typer.Argument(exists=True, help="Synthetic CT (HU): a volume or a folder of volumes.")],
    ref: Annotated[Path, typer.Argument(exists=True, help="Reference CT: a volume or a folder, matched by case id.")],
    mask: Annotated[Path | None, typer.Option(
        "--mask", exists=True, help="Body masks (folder or one file). Default: the reference's Otsu body mask."
    )] = None,
    protocol: Annotated[Protocol, typer.Option(help="Metric definitions of this SynthRAD challenge.")] = (
        Protocol.synthrad2023),
    csv: Annotated[Path | None, typer.Option(help="Write per-case metrics to this CSV file.")] = None,
    json: Annotated[Path | None, typer.Option(
        help="Write per-case metrics, mean ± sd and failures to this JSON file.")] = None,
    series: Annotated[list[str] | None, typer.Option(
        "--series", metavar="UID", help="Series Instance UID to read from a DICOM folder holding several "
                                        "(repeatable).")] = None,
    segmentation: Annotated[bool, typer.Option(
        "--segmentation", help="Also Dice and HD95 (mm) of bone, air and soft tissue thresholded in HU on sCT and "
                               "CT (hu_dice_*, hu_hd95_*; not SynthRAD's TotalSegmentator structures).")] = False,
    dose: Annotated[bool, typer.Option(
        "--dose",
        help="Also plan on each CT, recompute on the sCT and compare doses (extra medsynth\\[dose]).")] = False,
    target: Annotated[Path | None, typer.Option(
        exists=True, help="With --dose: target masks (folder or one file). Default: a 15 mm sphere deep in the "
                          "body.")] = None,
    modality: Annotated[Modality, typer.Option(help="With --dose: which plans to make.")] = Modality.both,
    figures: Annotated[Path | None, typer.Option(
        help="With --dose: write a PNG per case here (CT dose, sCT dose, difference, gamma).")] = None,
) -> None:
    """Score synthetic CTs: MAE, PSNR, (MS-)SSIM, per-tissue MAE and bone Dice, per case and mean ± sd.

    With --dose, also by dose: gamma pass rates, dose differences, target DVH points, proton range shifts.
    """
    if not dose and (target is not None or figures is not None):
        raise UsageError("--target and --figures belong to the dose evaluation; add --dose.")
    if dose:
        require_dose_extra()
    from medsynth.services.evaluate import evaluate_folders  # torch: once the options hold

    with console.status("evaluating") as status:
        report = evaluate_folders(pred, ref, mask, protocol,
                                  progress=lambda case: status.update(f"evaluating {escape(case)}"),
                                  outputs=(csv, json, figures), series=tuple(series or ()),
                                  segmentation=segmentation)
    console.print(report.table())
    if report.ignored:
        console.print(f"ignored {len(report.ignored)} side products in {escape(str(pred))} (not predictions of a "
                      f"case of their own): {escape(', '.join(report.ignored))}")
    for warning in report.warnings:
        error_console.print(f"[bold yellow]warning:[/] {escape(warning.case)}: {escape(warning.reason)}")
    if dose:
        report = _dose_report(report, pred, ref, mask, target, modality, figures, tuple(series or ()))
    for failure in report.failures:
        error_console.print(f"[bold red]failed:[/] {escape(failure.case)}: {escape(failure.reason)}")
    if csv is not None:
        console.print(f"wrote {escape(str(report.to_csv(csv)))}")
    if json is not None:
        console.print(f"wrote {escape(str(report.to_json(json)))}")
    if report.failures:
        raise typer.Exit(1)


def _dose_report(image: EvaluationReport, pred: Path, ref: Path, mask: Path | None, target: Path | None,
                 modality: Modality, figures: Path | None, series: tuple[str, ...]) -> EvaluationReport:
    """Runs the dose evaluation under a progress bar over cases and beams; prints its tables; joins the reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medsynth.dose.evaluate import evaluate_dose

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        cases = bar.add_task("dose: cases", total=None)
        beams = bar.add_task("beams", total=None)

        dose = evaluate_dose(pred, ref, mask, target, modality, figures=figures, series=series,
                             progress=lambda case, done, total: bar.update(
                                 cases, completed=done, total=total, description=f"dose: {escape(case)}"),
                             beam_progress=lambda stage, done, total: bar.update(
                                 beams, completed=done, total=total, description=escape(stage)))
    for kind in modality.kinds():
        columns = tuple(n for n in dose.metric_names if n.startswith(f"{kind}_"))
        console.print(dose.table(f"{kind} plan, sCT − CT in % of the prescription", columns))
    if figures is not None:
        console.print(f"wrote dose figures to {escape(str(figures))}")
    return image.join(dose)
