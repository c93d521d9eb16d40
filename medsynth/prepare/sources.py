"""Raw MR/CT cases for ``prepare``, in the layouts medsynth reads: ``RAW/mr/`` + ``RAW/ct/`` folders
(images or DICOM series folders, MR contrasts as ``<case>_0000``, ``<case>_0001``, ...), a datalist
JSON, or SynthRAD-style per-case folders ``RAW/<case>/mr.*``, ``ct.*``.

Unlike training data, raw pairs need not share a grid: that is what ``prepare`` fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsynth.data.layouts import Case, Problems, channel_roles, discover_paired
from medsynth.errors import InputError
from medsynth.io.cases import case_id, list_images

_LAYOUTS = ("RAW/mr/ + RAW/ct/ folders (optional RAW/labels/), a datalist JSON, or per-case folders "
            "RAW/<case>/mr.*, ct.*")


@dataclass(frozen=True)
class RawCase:
    """One raw pair: its MR contrasts (the first one's grid is the output grid), CT and optional labels.

    ``channel_named`` says the MR files were named ``<case>_0000``, ... (outputs keep that naming).
    Labels are delineations on the CT (as in radiotherapy) unless they lie on the MR's grid.
    """

    case: str
    mr: tuple[Path, ...]
    ct: Path
    labels: Path | None = None
    channel_named: bool = False


def find_raw_cases(raw: Path) -> list[RawCase]:
    """Every raw case under ``raw``, sorted by id; problems are reported together (:class:`InputError`)."""
    raw = Path(raw)
    if not raw.exists():
        raise InputError(f"{raw}: no such folder or datalist; give {_LAYOUTS}.")
    if raw.is_file() or (raw / "mr").is_dir() or (raw / "ct").is_dir():
        datalist = discover_paired(raw, ("mr", "ct"), ("labels",))
        return sorted((_from_case(case) for case in datalist.training + datalist.validation), key=lambda c: c.case)
    return _per_case_folders(raw)


def _from_case(case: Case) -> RawCase:
    mr = tuple(case[role] for role in channel_roles(case))
    name = case_id(case["ct"])
    if name == "ct":  # a datalist pointing into per-case folders: the folder names the case
        name = case["ct"].parent.name
    return RawCase(name, mr, case["ct"], case.get("labels"), channel_named=case_id(mr[0]) != name)


def _per_case_folders(raw: Path) -> list[RawCase]:
    """SynthRAD's release layout: one folder per case holding ``mr``, ``ct`` (and ``mask``) images."""
    problems = Problems(raw)
    cases = []
    for folder in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            files = list_images(folder)
        except InputError as error:
            problems.add(str(error))
            continue
        present = [role for role in ("mr", "ct") if role in files]
        if len(present) == 1:
            problems.add(f"{folder.name}/ has {present[0]} but no {'ct' if present[0] == 'mr' else 'mr'} image")
        elif present:
            cases.append(RawCase(folder.name, (files["mr"],), files["ct"], files.get("labels")))
    problems.raise_if_any()
    if not cases:
        raise InputError(f"{raw}: holds no raw MR/CT cases; give {_LAYOUTS}.")
    return cases
