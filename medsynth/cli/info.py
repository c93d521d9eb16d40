"""``medsynth info``: versions and compute."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from rich.table import Table

from medsynth import __version__
from medsynth.cli.app import app, console
from medsynth.engine.runtime import device_report

_PACKAGES = ("torch", "monai", "nibabel", "SimpleITK", "numpy", "scipy", "safetensors", "typer", "rich")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@app.command()
def info() -> None:
    """Versions, device, CUDA/AMP/bf16 availability and threads."""
    table = Table(title=f"medsynth {__version__}", show_header=False)
    for package in _PACKAGES:
        table.add_row(package, _version(package))
    for key, value in device_report().items():
        table.add_row(key, value)
    console.print(table)
