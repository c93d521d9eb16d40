"""The Typer application and the one place where errors become exit codes (SPEC §1).

Only typer, rich and :mod:`medsynth.choices` are imported here and at the top of every command module:
torch and MONAI load inside the command that needs them, so ``--help``, ``--version`` and shell
completion answer at once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from medsynth import __version__
from medsynth.errors import MedsynthError

# Piped into a Slurm log or CI, Rich would fold tables to 80 columns and cut every case id to ``case_0…``; a
# log is read, not fitted to a screen: without a terminal (and no COLUMNS set) tables get 200 columns.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)

# Options that take one value or one per axis, written as the README does: ``--patch-size 32 32 32``.
MULTI_VALUE_OPTIONS = frozenset({"--patch-size"})
_NUMBER = re.compile(r"^\d+$")
_DEBUG_KEY = "medsynth.debug"


def spread_multi_value_options(args: Sequence[str]) -> list[str]:
    """``--patch-size 32 32 32`` -> ``--patch-size 32 --patch-size 32 --patch-size 32`` (click options take
    a fixed number of values; repeating the option is how they collect a list). Tokens after ``--`` are kept."""
    out: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            return out + tokens[i:]
        out.append(token)
        i += 1
        if token in MULTI_VALUE_OPTIONS:
            first = True
            while i < len(tokens) and _NUMBER.match(tokens[i]):
                out.extend([tokens[i]] if first else [token, tokens[i]])
                first = False
                i += 1
    return out


def _without_debug(args: Sequence[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` wherever it stands (before or after the subcommand, not after ``--``)."""
    tokens = list(args)
    end = tokens.index("--") if "--" in tokens else len(tokens)
    kept = [t for t in tokens[:end] if t != "--debug"]
    return kept + tokens[end:], len(kept) < end


def _flags_without_type(params: list[Any]) -> list[Any]:
    """Show ``--overwrite``, not ``--overwrite <bool>``: a flag takes no value, so its type column stays empty."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _shown_default(param: Any) -> str | None:
    """A parameter's default as its help states it, or None where there is none to state (an absent option,
    an off switch such as ``--overwrite``)."""
    default = param.default
    if default is None or (getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None)):
        return None
    if isinstance(default, bool):  # --amp/--no-amp
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default) or None
    return str(getattr(default, "value", default))


def _readable(params: list[Any]) -> list[Any]:
    """Every command's help in one style: flags without a type, arguments named in capitals as the usage
    line and the docs name them (MODEL, not ``model``), and each default in the help text as ``Default: X.``
    (typer would add ``[default: X]``; the defaults that depend on the family can only be written in words,
    so all are)."""
    for param in _flags_without_type(params):
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()
        if param.show_default is True and (shown := _shown_default(param)) is not None:
            param.help = f"{param.help or ''} Default: {shown}.".strip()
        param.show_default = False
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _readable(super().get_params(ctx))


class _NoteHandler(logging.Handler):
    """The library's notes (``medsynth`` logger: a resampled DICOM series, ...) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        error_console.print(record.getMessage(), markup=False)


_notes = logging.getLogger("medsynth")
_notes.addHandler(_NoteHandler(logging.WARNING))
_notes.propagate = False


class _ErrorReportingGroup(TyperGroup):
    """One line on stderr and the exit code of SPEC §1 for every error, usage errors included.

    A :class:`MedsynthError` becomes its own exit code; a usage error (unknown option, bad value, missing
    argument) exits 2. ``--debug``, anywhere on the line, shows the traceback instead.
    """

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())  # bare ``medsynth``: the help, and the exit code of a usage error
            ctx.exit(2)
        args, debug = _without_debug(args)
        if debug:
            ctx.meta[_DEBUG_KEY] = True
        return super().parse_args(ctx, spread_multi_value_options(args))

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedsynthError as error:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            error_console.print(f"[bold red]error:[/] {escape(str(error))}", markup=True)
            raise typer.Exit(error.exit_code) from None

    def main(self, args: Sequence[str] | None = None, *pos: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        if not standalone_mode:
            return super().main(args, *pos, standalone_mode=False, **kw)
        try:
            code = super().main(args, *pos, standalone_mode=False, **kw)
        except typer.TyperException as error:  # the base of every usage and parameter error typer raises
            where = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) else ""
            error_console.print(f"[bold red]error:[/] {escape(error.format_message())}{escape(where)}")
            sys.exit(error.exit_code)
        except typer.Abort:
            error_console.print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class _App(typer.Typer):
    """Every ``@app.command()`` is a :class:`_Command`."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    name="medsynth",
    cls=_ErrorReportingGroup,
    help="MRI-to-CT translation, abnormality maps and CT-slice generation with GANs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"medsynth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors "
                                        "(also accepted after the command).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True,
                           help="Print the version.")
    ] = False,
) -> None:
    """medsynth: calibrated synthetic CT from MRI, VA-GAN abnormality maps and FastGAN CT slices."""
    from medsynth.engine.threads import apply_thread_choice

    apply_thread_choice()  # before any command imports torch: threads for the CPUs this process may use
    if debug:
        ctx.meta[_DEBUG_KEY] = True
    ctx.obj = {"debug": bool(ctx.meta.get(_DEBUG_KEY))}
