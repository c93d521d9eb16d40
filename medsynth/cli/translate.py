"""``medsynth translate MODEL INPUT OUT_DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medsynth.choices import CPU_BF16_HELP, DEVICE_HELP, DEVICE_METAVAR, DeviceChoice, Direction, Engine, OutputFormat
from medsynth.cli.app import app, console, error_console
from medsynth.cli.formats import CT_SERIES_METAVAR, format_parser


@app.command(epilog="Example: medsynth translate runs/vox2vox mr/ sct/ --format dicom --device cuda")
def translate(
    model: Annotated[Path, typer.Argument(exists=True, help="Run folder, its model.safetensors, an exported .onnx, "
                                          "or a folder of runs (an ensemble, e.g. folds).")],
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", exists=True, help="A volume, a DICOM series folder, "
                                               "a folder of them, or a SynthRAD task or case folder "
                                               "(<case>/mr.nii.gz).")],
    out_dir: Annotated[Path, typer.Argument(help="Outputs: OUT_DIR/<case>.nii.gz (.mha; DICOM: OUT_DIR/<case>/).")],
    direction: Annotated[Direction, typer.Option(help="mr2ct, or ct2mr for CycleGAN models.")] = Direction.MR2CT,
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap fraction.")] = 0.25,
    tta: Annotated[bool, typer.Option("--tta", help="Average over the flips seen in training.")] = False,
    uncertainty: Annotated[int, typer.Option(help="K stochastic passes; writes <case>_std.nii.gz.")] = 0,
    shard: Annotated[str | None, typer.Option(
        metavar="I/N", help="This machine's share of the cases: part I of N, I counting from 0 (0/4 ... 3/4).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo cases whose outputs exist.")] = False,
    device: Annotated[str, typer.Option(metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = DeviceChoice.AUTO,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    cpu_bf16: Annotated[bool, typer.Option("--cpu-bf16", help=CPU_BF16_HELP)] = False,
    mask: Annotated[Path | None, typer.Option("--mask", exists=True, help="Folder of body masks named by case id: "
                                              "the region whose intensities scale each MR. Default: each MR's "
                                              "Otsu body mask.")] = None,
    output_format: Annotated[str, typer.Option("--format", parser=format_parser(ct_series=True),
                                               metavar=CT_SERIES_METAVAR,
                                               help="nifti, mha, or dicom (a CT Image series per case, for a "
                                                    "planning system).")] = OutputFormat.NIFTI.value,
    series: Annotated[list[str] | None, typer.Option(
        "--series", metavar="UID", help="Series Instance UID to read from a DICOM folder holding several "
                                        "(repeatable).")] = None,
    patient_id: Annotated[str | None, typer.Option(
        "--patient-id", metavar="ID", help="DICOM output from NIfTI/MHA input: Patient ID. Default: the case id."
    )] = None,
    patient_name: Annotated[str | None, typer.Option(
        "--patient-name", metavar="NAME", help="DICOM output from NIfTI/MHA input: Patient's Name, as DICOM writes it "
                               "(Family^Given). Default: empty (a DICOM MR lends its own).")] = None,
    patient_position: Annotated[str | None, typer.Option(
        "--patient-position", metavar="POSITION", help="DICOM output: how the patient lay (HFS, FFS, HFP, ...), "
                                                       "needed when the input does not say it (NIfTI/MHA).")] = None,
    series_number: Annotated[int | None, typer.Option(
        "--series-number", metavar="N", help="DICOM output: the sCT's Series Number. Default: the MR's + 1000 "
                                             "(MR series 3 -> 1003; 1000 from NIfTI/MHA input).")] = None,
    engine: Annotated[Engine, typer.Option(help="torch, or onnxruntime (extra medsynth\\[onnx]).")] = Engine.TORCH,
    sw_batch_size: Annotated[int, typer.Option("--sw-batch-size", help="Windows per network call.")] = 4,
    workers: Annotated[int, typer.Option(help="Cases read and preprocessed ahead in parallel.")] = 1,
    error_threshold: Annotated[float, typer.Option(
        "--error-threshold", metavar="HU",
        help="With a calibrated model and --tta --uncertainty: the QA line's share of the body whose expected "
             "error exceeds HU. Default: 100.")] = 100.0,
) -> None:
    """Translate MR into synthetic CT (int16 HU) on each input's own grid."""
    from medsynth.io.modelpaths import resolve_model_paths
    from medsynth.services.options import TranslateOptions

    options = TranslateOptions(direction=direction, overlap=overlap, tta=tta, uncertainty=uncertainty,
                               shard=shard, overwrite=overwrite, device=device, amp=amp, mask=mask,
                               format=output_format, series=tuple(series or ()), patient_id=patient_id,
                               patient_name=patient_name, patient_position=patient_position,
                               series_number=series_number,
                               engine=engine, sw_batch_size=sw_batch_size, workers=workers, cpu_bf16=cpu_bf16,
                               error_threshold=error_threshold)
    resolve_model_paths(model)  # a folder without a model is refused before torch loads
    from medsynth.services.translate import translate as translate_cases  # torch: once the options hold

    report = translate_cases(model, input_path, out_dir, options)
    console.print(report.table(f"translate -> {out_dir}"))
    for result in report.results:
        if result.expected_error:
            console.print(f"QA {escape(result.case)}: {escape(result.expected_error)}")
        if result.warning:
            error_console.print(f"[bold yellow]warning:[/] {escape(result.case)}: {escape(result.warning)}")
    if report.failures:
        raise typer.Exit(1)
