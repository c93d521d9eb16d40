"""``medsynth generate MODEL OUT_DIR --count N``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from medsynth.choices import DEVICE_HELP, DEVICE_METAVAR, DeviceChoice, ImageFormat
from medsynth.cli.app import app, console
from medsynth.cli.formats import MAPS_METAVAR, format_parser


@app.command(epilog="Example: medsynth generate runs/fastgan slices/ --count 64 --eval data/")
def generate(
    model: Annotated[Path, typer.Argument(exists=True, help="FastGAN run folder or its model.safetensors.")],
    out_dir: Annotated[Path, typer.Argument(help="Outputs: OUT_DIR/generated_0000.nii.gz, ... and a PNG grid.")],
    count: Annotated[int, typer.Option("--count", help="Number of slices to generate.")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes identical slices.")] = 0,
    truncation: Annotated[float | None, typer.Option(
        help="Truncation trick: draw z from a normal truncated to |z_i| ≤ T (entries beyond T are redrawn); "
             "smaller T gives more typical, less varied slices. Default: no truncation.")] = None,
    eval_data: Annotated[Path | None, typer.Option(
        "--eval", metavar="DATA", exists=True,
        help="Real slices (the training DATA for the memorisation check) to compare with: HU-histogram distance, "
             "nearest-neighbour SSIM; writes OUT_DIR/generation_metrics.json.")] = None,
    features: Annotated[Path | None, typer.Option(
        exists=True, metavar="FILE",
        help="TorchScript feature extractor (input (B, 3, H, W) grey in [0, 1]) for FID and KID with --eval.")] = None,
    copy_ssim: Annotated[float, typer.Option("--copy-ssim", help="Nearest-neighbour SSIM from which a generated "
                                             "slice is flagged as a near-copy.")] = 0.95,
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace slices already in OUT_DIR.")] = False,
    device: Annotated[str, typer.Option(metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = DeviceChoice.AUTO,
    output_format: Annotated[str, typer.Option("--format", parser=format_parser(ct_series=False),
                                               metavar=MAPS_METAVAR,
                                               help="nifti or mha.")] = ImageFormat.NIFTI.value,
) -> None:
    """Generate CT slices (2D NIfTI, int16 HU, the training pixel spacing) from a FastGAN model."""
    from medsynth.io.modelpaths import resolve_model_path
    from medsynth.services.options import GenerateOptions

    options = GenerateOptions(count=count, seed=seed, truncation=truncation, device=device, overwrite=overwrite,
                              eval_data=eval_data, features=features, copy_ssim=copy_ssim, format=output_format)
    resolve_model_path(model)  # a folder without a model is refused before torch loads
    from medsynth.services.generate import generate as generate_slices  # torch: once the options hold

    result = generate_slices(model, out_dir, options)
    console.print(f"wrote {len(result.files)} slices and {escape(result.grid.name)} to {escape(str(out_dir))}")
    if result.metrics_file is not None:
        console.print(_metrics_table(result.metrics))
        if result.metrics.get("anatomy"):
            console.print(_anatomy_table(result.metrics["anatomy"]))
        console.print(f"metrics: {escape(str(result.metrics_file))}")


def _metrics_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="generation metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.4g}")
        elif isinstance(value, int):
            table.add_row(name, str(value))
    return table


def _anatomy_table(anatomy: dict[str, dict[str, float]]) -> Table:
    table = Table(title="anatomy: generated vs real (mean ± sd; yes/no as shares)")
    for column in ("statistic", "generated", "real", "W1"):
        table.add_column(column, justify="left" if column == "statistic" else "right")
    for name, row in anatomy.items():
        table.add_row(name, f"{row['generated']:.3g} ± {row['generated_sd']:.2g}",
                      f"{row['real']:.3g} ± {row['real_sd']:.2g}", f"{row['w1']:.3g}")
    return table
