"""``medsynth export MODEL OUT.onnx``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.choices import Direction
from medsynth.cli.app import app, console


@app.command(epilog="Example: medsynth export runs/vox2vox vox2vox.onnx")
def export(
    model: Annotated[Path, typer.Argument(exists=True, help="Run folder or its model.safetensors.")],
    out: Annotated[Path, typer.Argument(metavar="OUT.onnx", help="The ONNX file to write.")],
    direction: Annotated[Direction, typer.Option(help="CycleGAN: which generator (mr2ct or ct2mr).")] = (
        Direction.MR2CT),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.onnx.")] = False,
) -> None:
    """Export the model's inference network to ONNX (opset 17, dynamic spatial axes, metadata kept)."""
    from medsynth.io.modelpaths import resolve_model_path

    resolve_model_path(model)  # a folder without a model is refused before torch loads
    from medsynth.export import export_onnx

    written = export_onnx(model, out, direction.value, overwrite)
    console.print(f"exported -> {written}")
