"""Raw MR/CT cases for ``prepare``, in the layouts medsynth reads: ``RAW/mr/`` + ``RAW/ct/`` folders
(images or DICOM series folders, MR contrasts as ``<case>_0000``, ``<case>_0001``, ...), a datalist
JSON, or SynthRAD-style per-case folders ``RAW/<case>/mr.*``, ``ct.*``.

Unlike training data, raw pairs need not share a grid: that is what ``prepare`` fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsynth.data.layouts import Case, channel_roles, discover_paired
from medsynth.errors import InputError
from medsynth.io.cases import case_id

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
    datalist = discover_paired(raw, ("mr", "ct"), ("labels",))
    return sorted((_from_case(case) for case in datalist.training + datalist.validation), key=lambda c: c.case)


def _from_case(case: Case) -> RawCase:
    mr = tuple(case[role] for role in channel_roles(case))
    return RawCase(case.id, mr, case["ct"], case.get("labels"), channel_named=case_id(mr[0]) not in (case.id, "mr"))
