"""Where outputs may go, and how they are written: the one output-location check and the one atomic writer.

Every command names its inputs (data, models, masks, config files) and its outputs (folders and
files). :func:`check_not_an_input` refuses an output that is, or lies inside, an input, whatever
path leads there (relative, ``..``, symbolic links); ``--overwrite`` never lifts this.
:func:`atomic_path` writes through a hidden temporary name and a rename, so an interruption (even
SIGKILL) never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from medsynth.errors import InputError, UsageError

PARTIAL_MARK = ".partial"


def real_path(path: Path) -> Path:
    """The absolute path with every symbolic link and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_an_input(output: Path, inputs: Iterable[Path | None], case_paths: Iterable[Path] = ()) -> None:
    """Refuse ``output`` (a file or folder a command writes) if it would write over or into an input.

    ``inputs`` are the files and folders a command reads (``None`` entries are skipped): the output
    may not be one of them, nor lie inside an input folder. ``case_paths`` are the single images or
    series a command turns into outputs named by case id beside each other: an output folder may not
    be the folder that holds one of them. Raises :class:`UsageError` (exit 2) naming both paths.
    """
    target = real_path(output)
    for item in inputs:
        if item is None:
            continue
        source = real_path(item)
        if target == source:
            raise UsageError(f"{output}: is an input of this command ({item}); choose another output so inputs "
                             "stay untouched.")
        if source.is_dir() and _within(target, source):
            raise UsageError(f"{output}: lies inside the input folder {item}; choose an output outside it so "
                             "inputs stay untouched.")
    for case in case_paths:
        if real_path(case).parent == target:
            raise UsageError(f"{output}: is the folder of the input {case}; outputs named by case id would "
                             "replace it. Choose another output folder.")


def prepare_output_dir(out_dir: Path, inputs: Iterable[Path | None], case_paths: Iterable[Path] = ()) -> Path:
    """Check ``out_dir`` with :func:`check_not_an_input`, create it and make sure it can be written.

    Returns ``out_dir``. Raises :class:`UsageError` for an output over an input or an unwritable folder.
    """
    out_dir = Path(out_dir)
    check_not_an_input(out_dir, inputs, case_paths)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # distinct per process (torchrun)
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{out_dir}: cannot write outputs here ({error.strerror or error}); choose a writable "
                         "folder.") from error
    return out_dir


@contextlib.contextmanager
def no_empty_folder_on_refusal(folder: Path, created: bool) -> Iterator[None]:
    """A command refused after creating ``folder`` (an unusable single input, say) leaves no empty folder."""
    try:
        yield
    except Exception:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "", folder: bool = False) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    ``suffix`` ends the temporary name (writers that choose a format by extension need it, e.g.
    ``.nii.gz``). With ``folder`` the temporary path is a new empty folder (a DICOM series), and a
    folder already at ``path`` is replaced only once the new one is complete. On any failure the
    temporary file or folder is removed and ``path`` is left as it was; an ``OSError`` becomes
    :class:`InputError` (exit 2) naming the path.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PARTIAL_MARK}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            partial.mkdir()
        yield partial
        _rename_into_place(partial, path, folder)
    except BaseException as error:
        # Whatever stopped the write (full disk, Ctrl-C), no half-written file may stay behind.
        _remove(partial)
        if isinstance(error, OSError):
            raise InputError(f"{path}: cannot be written ({error.strerror or error}); choose a writable "
                             "location.") from error
        raise


def _rename_into_place(partial: Path, path: Path, folder: bool) -> None:
    if not folder or not path.exists():
        os.replace(partial, path)
        return
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; move it away to write a folder there.")
    old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PARTIAL_MARK}.old")
    os.replace(path, old)  # a folder cannot be renamed over another: the old one steps aside first
    os.replace(partial, path)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(Path(path)) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def remove_partials(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted (killed) writer left directly inside ``folder``."""
    removed = []
    if Path(folder).is_dir():
        for leftover in Path(folder).glob(f".*{PARTIAL_MARK}*"):
            _remove(leftover)
            removed.append(leftover)
    return removed


def remove_partials_of(paths: Iterable[Path]) -> list[Path]:
    """Delete what a killed writer of each of ``paths`` left beside it (its :func:`atomic_path` temporaries).

    For folders that several processes write at once (shards of one batch): each removes only the
    leftovers of its own outputs, never another process's file in progress.
    """
    removed = []
    for path in map(Path, paths):
        if path.parent.is_dir():
            for leftover in path.parent.glob(f".{glob.escape(path.name)}.*{PARTIAL_MARK}*"):
                _remove(leftover)
                removed.append(leftover)
    return removed
