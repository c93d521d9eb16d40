"""``--format``: a name among the output formats of io's registry, checked when the command is parsed, so that a
format registered after import (a plugin, a test) is accepted like the built-in ones."""

from __future__ import annotations

from collections.abc import Callable

import typer

from medsynth.choices import ImageFormat, OutputFormat

#: What ``--help`` shows: the built-in formats (the registry itself is read only once a command runs).
CT_SERIES_METAVAR = f"[{'|'.join(OutputFormat)}]"
MAPS_METAVAR = f"[{'|'.join(ImageFormat)}]"


def format_parser(ct_series: bool) -> Callable[[str], str]:
    """The parser of ``--format``: the name itself when :func:`medsynth.io.formats.output_formats` (with or
    without formats that hold a patient's CT only, DICOM) offers it, else a :class:`typer.BadParameter`."""

    def parse(text: str) -> str:
        from medsynth.io.formats import output_formats

        offered = output_formats(ct_series)
        if text not in offered:
            raise typer.BadParameter(f"{text!r} is not one of {', '.join(map(repr, offered))}.")
        return text

    return parse
