"""``medsynth train FAMILY DATA --out RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medsynth.choices import DEVICE_HELP, DEVICE_METAVAR, FamilyName
from medsynth.cli.app import app, console

# The defaults shown here are the families' own (tests/test_cli_help.py checks them against the configs).
STEPS_HELP = "Training steps (generator updates). Default: 2000."
BATCH_HELP = "Samples per step and process. Default: 2 (fastgan: 8)."
PATCH_HELP = ("Patch size in voxels: one value for every axis, or one per axis (--patch-size 64 64 32). "
              "Default: 64 per axis (pix2pix, cyclegan); vagan: whole images; fastgan: use 'resolution' in --config.")
DIMS_HELP = "2: slice-wise networks; 3: volumetric. Default: 3 (vox2vox is always 3; fastgan is 2D)."


@app.command(epilog="Example: medsynth train vox2vox data/ --out runs/vox2vox --steps 2000 --device cuda")
def train(
    family: Annotated[FamilyName, typer.Argument(
        case_sensitive=False, help="pix2pix (vox2vox: 3D pix2pix), cyclegan, vagan or fastgan.")],
    data: Annotated[Path, typer.Argument(exists=True, help="Dataset: a folder (mr/ and ct/ folders, or SynthRAD "
                                                          "case folders <case>/mr.*, ct.*) or a datalist JSON.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config, checkpoints, logs, model.")],
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE.yaml", exists=True,
                                                help="YAML with 'train:' and 'model:' sections.")] = None,
    steps: Annotated[int | None, typer.Option(show_default=False, help=STEPS_HELP)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help=BATCH_HELP)] = None,
    patch_size: Annotated[list[int] | None, typer.Option("--patch-size", metavar="P [P P]", help=PATCH_HELP)] = None,
    dims: Annotated[int | None, typer.Option(help=DIMS_HELP)] = None,
    device: Annotated[str | None, typer.Option(metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp",
                                             help="Mixed precision on CUDA. Default: on.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: 0.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
                      ] = False,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Validate every N steps (0: never). "
                                                  "Default: 500.")] = None,
    ckpt_every: Annotated[int | None, typer.Option("--ckpt-every", help="Checkpoint every N steps. Default: 500.")
                          ] = None,
    fold: Annotated[int | None, typer.Option(help="Train fold K (0-based) of a --folds N split.")] = None,
    folds: Annotated[int | None, typer.Option(help="N: a seeded N-fold split written to RUN/split.json.")] = None,
    init: Annotated[Path | None, typer.Option("--init", metavar="MODEL", exists=True, help="Fine-tune: start the "
                                              "networks from this trained model (run folder or model file).")] = None,
    val: Annotated[bool, typer.Option("--val", help="Validation only: validate RUN's trained model on the run's "
                                      "validation cases as training does, write RUN/validation/; train nothing.")
                   ] = False,
) -> None:
    """Train a model family; writes RUN/model.safetensors (and best.safetensors with validation)."""
    train_options = {"steps": steps, "batch_size": batch_size, "device": device, "amp": amp, "seed": seed,
                     "val_every": val_every, "ckpt_every": ckpt_every, "fold": fold, "folds": folds}
    model_options = {"patch_size": patch_size, "dims": dims}
    if val:
        others = {**train_options, **model_options, "config": config, "init": init, "resume": resume or None}
        _validate_only(family, data, out, device, [name for name, value in others.items()
                                                   if value is not None and name != "device"])
        return
    from medsynth.training import train as train_family

    result = train_family(family, data, out, train_options, model_options, config, resume,
                          note=lambda message: console.print(f"note: {escape(message)}", soft_wrap=True),
                          announce=lambda message: console.print(escape(message), soft_wrap=True), init=init)
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



def _validate_only(family: FamilyName, data: Path, out: Path, device: str | None, extra: list[str]) -> None:
    """``--val``: the run's own settings define the validation, so only --device may come with it."""
    from medsynth.errors import UsageError
    from medsynth.training import validate

    if extra:
        shown = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise UsageError(f"--val validates with the run's own settings; drop {shown} (only --device may be given).")
    run = validate(family, data, out, device or "auto")
    shown = "  ".join(f"{k} {v:.4g}" for k, v in run.validation.means.items())
    console.print(f"validated the model of step {run.step} -> {escape(str(run.folder))}\nvalidation: {shown}",
                  soft_wrap=True)
