"""``medsynth train FAMILY DATA --out RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.cli.app import app, console
from medsynth.engine.config import DeviceChoice
from medsynth.training import FamilyName
from medsynth.training import train as train_family


@app.command()
def train(
    family: Annotated[FamilyName, typer.Argument(help="Model family.")],
    data: Annotated[Path, typer.Argument(help="Dataset folder (SPEC layout) or datalist JSON.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config, checkpoints, logs, model.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML with 'train:' and 'model:' sections.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (generator updates).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples per step and process.")] = None,
    patch_size: Annotated[list[int] | None, typer.Option("--patch-size", help="Patch size (one value or one "
                                                         "per axis); repeat the option per value.")] = None,
    dims: Annotated[int | None, typer.Option(help="2: slice-wise networks; 3: volumetric.")] = None,
    device: Annotated[DeviceChoice | None, typer.Option(help="auto, cpu or cuda.")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Validate every N steps (0: never).")] = None,
    ckpt_every: Annotated[int | None, typer.Option("--ckpt-every", help="Checkpoint every N steps.")] = None,
) -> None:
    """Train a model family; writes RUN/model.safetensors (and best.safetensors with validation)."""
    train_options = {"steps": steps, "batch_size": batch_size, "device": device, "amp": amp, "seed": seed,
                     "val_every": val_every, "ckpt_every": ckpt_every}
    model_options = {"patch_size": patch_size, "dims": dims}
    result = train_family(family, data, out, train_options, model_options, config, resume)
    if not result.is_main:
        return
    if result.interrupted:
        console.print(f"interrupted at step {result.steps_done}; checkpoint saved. Continue with --resume.")
        raise typer.Exit(130)
    shown = "  ".join(f"{k} {v:.4g}" for k, v in result.validation.items())
    console.print(f"trained {result.steps_done} steps in {result.seconds:.0f} s -> {result.model_path}"
                  + (f"\nvalidation: {shown}" if shown else ""))
    for warning in result.warnings:
        typer.secho(warning, err=True, fg="red", bold=True)
