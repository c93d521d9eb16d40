"""``medsynth info``: versions and compute."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires, version

from rich.table import Table

from medsynth import __version__
from medsynth.cli.app import app, console


def dependency_versions() -> dict[str, str]:
    """Every package medsynth's installed metadata requires, extras marked, with its installed version."""
    versions: dict[str, str] = {}
    for requirement in requires("medsynth") or []:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", requirement)
        label = f"{name} (extra: {extra.group(1)})" if extra else name
        try:
            versions[label] = version(name)
        except PackageNotFoundError:
            versions[label] = "not installed"
    return versions


@app.command(epilog="Example: medsynth info")
def info() -> None:
    """Versions of medsynth's dependencies, device, CUDA/AMP/bf16 availability and threads."""
    from medsynth.engine.runtime import device_report

    table = Table(title=f"medsynth {__version__}", show_header=False)
    for package, installed in dependency_versions().items():
        table.add_row(package, installed)
    for key, value in device_report().items():
        table.add_row(key, value)
    console.print(table)
