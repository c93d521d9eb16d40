"""The one train/validation split of a run: seeded, K-fold when asked, written to ``RUN/split.json``.

The file follows nnU-Net's ``splits_final.json``: a list with one ``{"train": [...], "val": [...]}``
entry per fold (one entry without folds), case ids sorted. A run that finds the file (``--resume``)
reuses it, so a run never changes its validation cases; the folds of one experiment share the
seed and therefore the file's content, so their validation sets partition the cases.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.data.layouts import Datalist, Problems, check_unique_ids
from medsynth.errors import UsageError
from medsynth.io.outputs import write_text_atomically

SPLIT_FILENAME = "split.json"


@dataclass(frozen=True)
class Split:
    """The cases a run trains and validates on (ids sorted), and which fold of how many."""

    train: list[str]
    val: list[str]
    fold: int | None = None
    folds: int | None = None
    path: Path | None = None
    note: str = ""  # how a family without held-out cases validates, said instead of "no best model"

    def summary(self) -> str:
        """One line for the start of a run."""
        which = f"fold {self.fold} of {self.folds}: " if self.folds else ""
        where = f" -> {self.path}" if self.path else ""
        if not self.val:
            return (f"split: {which}{len(self.train)} training cases; "
                    f"{self.note or 'no validation cases: no best model'}{where}")
        return f"split: {which}{len(self.train)} training, {len(self.val)} validation cases{where}"


def held_out_count(cases: int, val_cases: int) -> int:
    """Validation cases without folds: ``val_cases``, or with -1 10 % of the cases (at least 1 from 4)."""
    default = max(1, cases // 10) if cases >= 4 else 0
    count = val_cases if val_cases >= 0 else default
    if count and count >= cases:
        raise UsageError(f"{count} validation cases of {cases} leave none for training; lower val_cases.")
    return count


Folds = list[dict[str, list[str]]]


@dataclass(frozen=True)
class SplitPlan:
    """How a run divides its cases: a seeded hold-out of ``val_cases`` or fold ``fold`` of ``folds``.

    ``path`` (``RUN/split.json``) is read when it exists and written otherwise (when ``write``: rank 0).
    """

    seed: int = 0
    fold: int | None = None
    folds: int | None = None
    path: Path | None = None
    write: bool = True

    def __post_init__(self) -> None:
        if (self.fold is None) != (self.folds is None):
            raise UsageError("--fold K and --folds N go together (fold K of an N-fold split).")
        if self.folds is not None and (self.folds < 2 or not 0 <= self.fold < self.folds):
            raise UsageError(f"--fold {self.fold} --folds {self.folds}: N must be at least 2 and K lie in 0..N-1.")

    def split(self, ids: Sequence[str], val_cases: int = -1, named_val: Sequence[str] = (),
              always_train: Sequence[str] = (), note: str = "") -> Split:
        """Split ``ids`` (unique case ids that may validate): from the run's file when it has one, else
        seeded, and written.

        ``named_val``: validation cases named by the data itself (a datalist's ``validation``), used as
        given unless folds are asked for (then they join the folds). ``always_train``: ids that train in
        every fold (e.g. VA-GAN's controls). Errors: a split file made for other cases, fewer cases than folds.
        """
        return self.split_groups({"": list(ids)}, val_cases, named_val, always_train, note)

    def split_groups(self, groups: Mapping[str, Sequence[str]], val_cases: int = -1, named_val: Sequence[str] = (),
                     always_train: Sequence[str] = (), note: str = "") -> Split:
        """:meth:`split` of each group apart (e.g. CycleGAN's MR and CT domains, each with its own
        validation cases), ids written as ``group/id``; a group named "" keeps plain ids."""
        named = [str(v) for v in named_val]
        prefixed = {g: [f"{g}/{i}" if g else str(i) for i in ids] for g, ids in groups.items()}
        eligible = sorted({i for ids in prefixed.values() for i in ids} | set(named))
        if self.path is not None and self.path.is_file():
            folds = _read(self.path)
        else:
            per_group = [self._fresh(ids, val_cases, named if self.folds else ()) for ids in prefixed.values()] \
                or [[{"train": [], "val": []}]]
            folds = [{"train": sorted([i for f in per_group for i in f[k]["train"]] + list(always_train)),
                      "val": sorted([i for f in per_group for i in f[k]["val"]]
                                    + ([] if self.folds else named))} for k in range(len(per_group[0]))]
        index = self.fold or 0
        if index >= len(folds):
            raise UsageError(f"{self.path}: holds {len(folds)} fold(s); fold {index} is not among them.")
        chosen = folds[index]
        if sorted(chosen["train"] + chosen["val"]) != sorted(eligible + list(always_train)):
            raise UsageError(f"{self.path}: was made for other cases than this dataset holds; the run's data "
                             "changed (restore it, or start a new run).")
        if self.path is not None and self.write and not self.path.is_file():
            _write(self.path, folds)
        return Split(list(chosen["train"]), list(chosen["val"]), self.fold, self.folds, self.path, note)

    def _fresh(self, ids: Sequence[str], val_cases: int, named: Sequence[str]) -> Folds:
        everything = sorted(set(ids) | set(named))
        if self.folds:
            return k_fold(everything, self.folds, self.seed)
        order = [str(i) for i in np.random.default_rng(self.seed).permutation(everything)]
        held = sorted(order[:held_out_count(len(everything), val_cases)]) if everything else []
        return [{"train": sorted(set(everything) - set(held)), "val": held}]


def split_datalist(datalist: Datalist, plan: SplitPlan, val_cases: int) -> tuple[Datalist, Split]:
    """A datalist's cases, by case id, divided by ``plan``: training and validation.

    Raises :class:`InputError` when two cases share an id (naming both files): one would replace the other.
    """
    problems = Problems(datalist.source or Path("dataset"))
    check_unique_ids(datalist.training + datalist.validation, problems)
    problems.raise_if_any()
    cases = {case.id: case for case in datalist.training + datalist.validation}
    split = plan.split([case.id for case in datalist.training], val_cases, [case.id for case in datalist.validation])
    return Datalist([cases[i] for i in split.train], [cases[i] for i in split.val], datalist.source), split


def k_fold(ids: Sequence[str], folds: int, seed: int) -> Folds:
    """nnU-Net-style folds: the ids shuffled by ``seed`` and cut into ``folds`` near-equal validation
    sets; fold k trains on the rest. Errors: fewer ids than folds."""
    if len(ids) < folds:
        raise UsageError(f"{folds} folds need at least {folds} cases; the dataset has {len(ids)}.")
    order = np.random.default_rng(seed).permutation(sorted(ids))
    chunks = [sorted(str(c) for c in chunk) for chunk in np.array_split(order, folds)]
    return [{"train": sorted(c for other in chunks if other is not chunk for c in other), "val": chunk}
            for chunk in chunks]


def _read(path: Path) -> Folds:
    try:
        folds = json.loads(path.read_text())
        if not isinstance(folds, list) or not all(set(f) == {"train", "val"} for f in folds):
            raise ValueError("expected a list of {'train': [...], 'val': [...]}")
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a readable split file ({error}); remove it to split anew.") from error
    return folds


def _write(path: Path, folds: Folds) -> None:
    write_text_atomically(path, json.dumps(folds, indent=2))
