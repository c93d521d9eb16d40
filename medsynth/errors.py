"""Errors that reach the user as one line and an exit code (SPEC §1)."""

from __future__ import annotations


class MedsynthError(Exception):
    """An error the CLI reports as a single line on stderr, without a traceback."""

    exit_code: int = 2


class InputError(MedsynthError):
    """Unusable input: missing, unreadable, malformed or inconsistent files (exit code 2)."""


class UsageError(MedsynthError):
    """A command or configuration that cannot work as given (exit code 2)."""


class ModelError(MedsynthError):
    """A model file that is missing, damaged, from another family or another version (exit code 2)."""


class TrainingDiverged(MedsynthError):
    """A loss became NaN or infinite; what could be saved was saved (exit code 1)."""

    exit_code = 1
