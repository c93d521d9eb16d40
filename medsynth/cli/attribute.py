"""``medsynth attribute MODEL INPUT OUT_DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import CPU_BF16_HELP, DEVICE_HELP, DEVICE_METAVAR, DeviceChoice, ImageFormat
from medsynth.cli.app import app, console
from medsynth.cli.formats import MAPS_METAVAR, format_parser


@app.command(epilog="Example: medsynth attribute runs/vagan patients/ maps/ --effect effects/")
def attribute(
    model: Annotated[Path, typer.Argument(exists=True, help="VA-GAN run folder or its model.safetensors.")],
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", exists=True, help="A patient volume, a DICOM "
                                               "series folder or a folder of them.")],
    out_dir: Annotated[Path, typer.Argument(help="Outputs: <case>_map.nii.gz, <case>_healthy.nii.gz, "
                                            "<case>_overlay.png.")],
    effect: Annotated[Path | None, typer.Option(exists=True, help="Folder of ground-truth effect maps (patient - "
                                                "control) by case id: report NCC(map, -effect).")] = None,
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap fraction.")] = 0.25,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo cases whose outputs exist.")] = False,
    device: Annotated[str, typer.Option(metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = DeviceChoice.AUTO,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    cpu_bf16: Annotated[bool, typer.Option("--cpu-bf16", help=CPU_BF16_HELP)] = False,
    mask: Annotated[Path | None, typer.Option("--mask", exists=True, help="Folder of body masks named by case id: "
                                              "the region whose intensities set each image's scale. Default: the "
                                              "model's.")] = None,
    output_format: Annotated[str, typer.Option("--format", parser=format_parser(ct_series=False),
                                               metavar=MAPS_METAVAR,
                                               help="nifti or mha.")] = ImageFormat.NIFTI.value,
    series: Annotated[list[str] | None, typer.Option(
        "--series", metavar="UID", help="Series Instance UID to read from a DICOM folder holding several "
                                        "(repeatable).")] = None,
) -> None:
    """Abnormality maps: map = M(x), the change that makes the image look healthy (so map ~ -effect)."""
    from medsynth.io.modelpaths import resolve_model_path
    from medsynth.services.options import AttributeOptions

    options = AttributeOptions(overlap=overlap, overwrite=overwrite, device=device, amp=amp, cpu_bf16=cpu_bf16,
                               effect=effect, mask=mask, format=output_format, series=tuple(series or ()))
    resolve_model_path(model)  # a folder without a model is refused before torch loads
    from medsynth.services.attribute import attribute as attribute_cases  # torch: once the options hold

    report = attribute_cases(model, input_path, out_dir, options)
    console.print(report.table(f"attribute -> {out_dir}"))
    if report.ncc:
        summary = report.ncc_summary()
        console.print(f"NCC(map, -effect): {summary.mean:.3f} ± {summary.sd:.3f} over {summary.n} cases")
    if report.failures:
        raise typer.Exit(1)
