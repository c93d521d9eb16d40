"""The Typer application and the one place where errors become exit codes (SPEC §1)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from medsynth import __version__
from medsynth.errors import MedsynthError

console = Console()
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _ErrorReportingGroup(TyperGroup):
    """Turns a :class:`MedsynthError` into one line on stderr and its exit code, unless ``--debug``."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedsynthError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            # Escaped: a message may hold brackets (``medsynth[dose]``, array shapes) that are not markup.
            error_console.print(f"[bold red]error:[/] {escape(str(error))}", markup=True)
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    name="medsynth",
    cls=_ErrorReportingGroup,
    help="MRI-to-CT translation, abnormality maps and CT-slice generation with GANs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"medsynth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """medsynth: calibrated synthetic CT from MRI, VA-GAN abnormality maps and FastGAN CT slices."""
    ctx.obj = {"debug": debug}
