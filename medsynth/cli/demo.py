"""``medsynth demo``: the whole pipeline on the built-in phantom."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.cli.app import app, console
from medsynth.errors import UsageError


@app.command(epilog="Example: medsynth demo --out medsynth-demo --steps 500")
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for data, run, outputs and previews.")] = Path(
        "medsynth-demo"),
    steps: Annotated[int, typer.Option(help="Training steps (2000: about 4 minutes on 2 idle CPU cores).")] = 2000,
) -> None:
    """Phantom -> train vox2vox -> translate unseen heads -> evaluate -> PNG previews."""
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: is not empty; choose a new --out folder for the demo.")
    from medsynth.demo import run_demo

    result = run_demo(out, steps=steps)
    console.print(result.report.table("vox2vox on unseen heads"))
    console.print(result.baseline.table("no-context baseline (MR intensity -> median HU lookup table)"))
    floor = result.floor.summary()
    console.print(f"floor: the phantom's oracle CT scores MAE {floor['mae'].mean:.1f} HU and bone Dice "
                  f"{floor['bone_dice'].mean:.2f} on these heads; no MR->CT model can do better "
                  "(cortical density does not show on T1 MR; docs/pix2pix.md)")
    console.print(f"previews: {result.preview} and {out / 'run' / 'previews'}; metrics: {out / 'metrics.json'}")
