"""Dataset discovery for every family (SPEC §2): folder layouts or a decathlon-style datalist JSON.

Every problem (missing folder, unmatched or duplicated case, unreadable file, MR/CT pair whose
grids disagree) is collected first and reported together, before any training starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from medsynth.errors import InputError, UsageError
from medsynth.io.casefolders import ROLES, CaseRoles, task_cases
from medsynth.io.cases import case_id, channel_of, group_channels, list_images
from medsynth.io.grids import grid_mismatch
from medsynth.io.image import Volume, read_image

Item = TypeVar("Item", Path, Volume)


@dataclass(frozen=True, eq=False)
class Case(Mapping[str, Item], Generic[Item]):
    """One case of a data set: its case id and role ("mr", "ct", "mask", ...) -> file (or, once read, volume).

    The id is fixed where the layout is understood (the file name in role folders, the case folder in a
    SynthRAD tree, the entry of a datalist) and travels with the case to the split file, the model file
    and every per-case report; it is never derived again from a file name (SynthRAD's are all ``mr``).
    """

    id: str
    by_role: Mapping[str, Item]

    def __getitem__(self, role: str) -> Item:
        return self.by_role[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_role)

    def __len__(self) -> int:
        return len(self.by_role)

    def having(self, roles: Sequence[str]) -> Case[Item]:
        """The same case with only those of ``roles`` it has."""
        return Case(self.id, {role: self.by_role[role] for role in roles if role in self.by_role})


@dataclass
class Datalist:
    """Cases for training and (optionally) validation, each a mapping role -> file."""

    training: list[Case]
    validation: list[Case] = field(default_factory=list)
    source: Path | None = None

    def files(self) -> list[Path]:
        return [path for case in self.training for path in case.values()]

    def ids(self) -> list[str]:
        """The case ids of the training and validation cases."""
        return [case.id for case in self.training + self.validation]


class Problems:
    """Collects dataset problems so they are reported together."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            # One line, as every error (SPEC §1), the problems numbered in it.
            listed = " ".join(f"({number}) {item}" for number, item in enumerate(self.items, 1))
            raise InputError(f"{self.source}: {len(self.items)} problem(s) in the dataset: {listed}")


def discover_paired(data: Path, required: Sequence[str], optional: Sequence[str] = ()) -> Datalist:
    """Cases present in every ``required`` folder (matched by case id), plus optional roles if present."""
    data = Path(data)
    if data.is_file():
        return read_datalist(data, required, optional)
    synthrad = task_cases(data)
    if synthrad is not None:
        return Datalist(training=_synthrad_paired(data, synthrad, required, optional), source=data)
    problems = Problems(data)
    folders = _role_folders(data, required, problems)
    _split_channels(folders, "mr", problems)
    problems.raise_if_any()
    ids = set.union(*(set(f) for f in folders.values()))
    for cid in sorted(ids):
        missing = [role for role, files in folders.items() if cid not in files]
        if missing:
            problems.add(f"case '{cid}' has no file in {', '.join(r + '/' for r in missing)}")
    extras = {role: _optional_folder(data, role, problems) for role in optional}
    problems.raise_if_any()
    cases = []
    for cid in sorted(ids):
        files = {role: found[cid] for role, found in folders.items()}
        files.update({role: found[cid] for role, found in extras.items() if cid in found})
        cases.append(Case(cid, files))
    return Datalist(training=cases, source=data)


def channel_role(role: str, index: int) -> str:
    """Role of channel ``index`` of a multi-contrast image: ``mr``, ``mr_0001``, ``mr_0002``, ..."""
    return role if index == 0 else f"{role}_{index:04d}"


def channel_roles(case: Mapping[str, object], role: str = "mr") -> list[str]:
    """The roles holding the channels of ``role`` in ``case``, in channel order (just ``[role]`` for one)."""
    roles = [role]
    while channel_role(role, len(roles)) in case:
        roles.append(channel_role(role, len(roles)))
    return roles


def channel_count(cases: Sequence[Mapping[str, object]], source: Path | None) -> int:
    """MR contrasts per case, the same in every case (a generator's MR channels); 1 for no cases.

    Raises :class:`UsageError` when the cases of ``source`` have different numbers of contrasts.
    """
    counts = {len(channel_roles(case)) for case in cases}
    if len(counts) > 1:
        raise UsageError(f"{source}: cases have {' or '.join(map(str, sorted(counts)))} MR channels; "
                         "every case needs the same contrasts in the same order.")
    return counts.pop() if counts else 1


def _split_channels(folders: dict[str, dict[str, Path]], role: str, problems: Problems, unpaired: bool = False
                    ) -> None:
    """Turn nnU-Net channel files (``mr/<case>_0000``, ``<case>_0001``, ...) into one role per channel.

    Only when ``role``'s ids all carry a channel suffix and none equals another folder's case id, so
    a single-contrast data set whose cases happen to be named ``x_0001`` is read as it always was.
    ``unpaired`` domains share no case ids, so there the ids must also read as contrasts: at least two
    cases, each with a ``_0000``, and one with more channels (:func:`_several_contrasts`).
    """
    files, others = folders.get(role), [set(f) for r, f in folders.items() if r != role]
    if not files or not others or set(files) & set.union(*others) or not all(map(channel_of, files)):
        return
    if unpaired and not _several_contrasts(files):
        return
    try:
        grouped = group_channels(files)
    except InputError as error:
        problems.add(str(error))
        return
    for index in range(len(next(iter(grouped.values())))):
        folders[channel_role(role, index)] = {case: paths[index] for case, paths in grouped.items()}


def discover_unpaired(data: Path, roles: Sequence[str], optional: Sequence[str] = ()) -> dict[str, dict[str, Path]]:
    """Per role, its cases (case id -> file): the domains need not share subjects."""
    data = Path(data)
    problems = Problems(data)
    folders = _role_folders(data, roles, problems)
    folders.update({role: _optional_folder(data, role, problems) for role in optional})
    problems.raise_if_any()
    return folders


def _role_folders(data: Path, roles: Sequence[str], problems: Problems) -> dict[str, dict[str, Path]]:
    if not data.is_dir():
        raise InputError(f"{data}: no such dataset folder or datalist JSON.")
    folders: dict[str, dict[str, Path]] = {}
    for role in roles:
        folder = data / role
        if not folder.is_dir():
            problems.add(f"missing folder {role}/ (expected layout: {', '.join(r + '/' for r in roles)})")
            continue
        try:
            folders[role] = list_images(folder)
        except InputError as error:
            problems.add(str(error))
            continue
        if not folders[role]:
            problems.add(f"{role}/ holds no images")
    return folders


def _optional_folder(data: Path, role: str, problems: Problems) -> dict[str, Path]:
    folder = data / role
    if not folder.is_dir():
        return {}
    try:
        return list_images(folder)
    except InputError as error:
        problems.add(str(error))
        return {}


def read_datalist(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> Datalist:
    """A MONAI decathlon-style JSON: ``{"training": [{role: file}], "validation": [...]}``; paths
    relative to the JSON's folder."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable datalist JSON ({error}).") from error
    if not isinstance(document, dict) or not isinstance(document.get("training"), list):
        raise InputError(f"{path}: a datalist needs a 'training' list of cases.")
    problems = Problems(path)
    lists = {part: _datalist_part(document.get(part, []), path, part, required, optional, problems)
             for part in ("training", "validation")}
    check_unique_ids(lists["training"] + lists["validation"], problems)
    problems.raise_if_any()
    return Datalist(training=lists["training"], validation=lists["validation"], source=Path(path))


def check_unique_ids(cases: Sequence[Case], problems: Problems) -> None:
    """Two cases with one id are a problem naming both cases' files: either would silently replace the other."""
    first: dict[str, Case] = {}
    for case in cases:
        if case.id in first:
            problems.add(f"case id '{case.id}' is given twice ({_first_file(first[case.id])} and "
                         f"{_first_file(case)}); give each case its own id (an \"id\" entry or its own file name)")
        else:
            first[case.id] = case


def _first_file(case: Case) -> Path:
    return next(iter(case.values()))


def datalist_case_id(entry: Mapping[str, object], files: Mapping[str, Path]) -> str:
    """A datalist entry's case id: its ``"id"`` when given, else its first file's name; a SynthRAD role
    file (``<case>/mr.nii.gz``) is named by its case folder, an nnU-Net channel file by its case."""
    if isinstance(entry.get("id"), str | int) and str(entry["id"]):
        return str(entry["id"])
    file = next(iter(files.values()))
    cid = case_id(file)
    if cid.lower() in ROLES:
        return file.parent.name
    channel = channel_of(cid)
    return channel[0] if channel and len(channel_roles(files)) > 1 else cid


def _datalist_part(entries: list, path: Path, part: str, required: Sequence[str], optional: Sequence[str],
                   problems: Problems) -> list[Case]:
    cases: list[Case] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.add(f"{part}[{index}] is not an object")
            continue
        missing = [role for role in required if role not in entry]
        if missing:
            problems.add(f"{part}[{index}] lacks {', '.join(missing)}")
            continue
        entry = _channels_as_roles(entry)
        wanted = (*required, *optional)
        roles = [r for r in entry if r in wanted or ("mr" in wanted and r.startswith("mr_") and r[3:].isdigit())]
        not_paths = [role for role in roles if not isinstance(entry[role], str)]
        if not_paths:
            problems.add(f"{part}[{index}].{not_paths[0]} is not a file path (for mr: a path or a list of them)")
            continue
        files = {role: (path.parent / entry[role]).resolve() for role in roles}
        absent = [str(p) for p in files.values() if not p.exists()]
        if absent:
            problems.add(f"{part}[{index}]: {', '.join(absent)} do not exist")
            continue
        cases.append(Case(datalist_case_id(entry, files), files))
    return cases


def _channels_as_roles(entry: dict) -> dict:
    """``{"mr": [t1, t2]}`` (one file per contrast) -> ``{"mr": t1, "mr_0001": t2}``."""
    if not isinstance(entry.get("mr"), list) or not entry["mr"]:
        return entry
    flat = {role: value for role, value in entry.items() if role != "mr"}
    flat.update({channel_role("mr", index): value for index, value in enumerate(entry["mr"])})
    return flat


def read_cases(cases: Sequence[Case[Path]], source: Path | None, check_grid: Sequence[str] = (),
               ndim: int | tuple[int, ...] = 3) -> list[Case[Volume]]:
    """Read every file of every case, reporting all unreadable files and grid mismatches together.

    Roles in ``check_grid`` must share shape and affine (within 1e-4) with the case's first role.
    ``ndim``: the dimensionalities accepted, ``(2, 3)`` for 2D models (which also take 2D images).
    """
    problems = Problems(source or Path("dataset"))
    loaded: list[Case[Volume]] = []
    for case in cases:
        volumes: dict[str, Volume] = {}
        for role, file in case.items():
            try:
                volumes[role] = read_image(file, ndim, check_values=role not in ("mask", "labels", "effect")
                                           and not role.endswith("_labels"))
            except InputError as error:
                problems.add(str(error))
        if len(volumes) == len(case):
            _check_same_grid(volumes, check_grid, problems)
        loaded.append(Case(case.id, volumes))
    problems.raise_if_any()
    return loaded


def _check_same_grid(volumes: dict[str, Volume], roles: Sequence[str], problems: Problems) -> None:
    present = [r for role in roles for r in channel_roles(volumes, role) if r in volumes]
    if len(present) < 2:
        return
    first = volumes[present[0]]
    # Raw MR/CT exports are the usual reason; prepare registers and resamples them onto the MR grid.
    remedy = ("run `medsynth prepare RAW OUT` to register and resample raw pairs onto the MR grid"
              if "ct" in present and "mr" in present else "resample them onto one grid")
    for role in present[1:]:
        reason = grid_mismatch(volumes[role], first)
        if reason:
            problems.add(f"{volumes[role].path}: {role} {reason} of {present[0]} ({first.path}); {remedy}")


def discover_domains(data: Path, domains: Sequence[str]) -> dict[str, list[Case]]:
    """Per domain, its cases ``{domain: image, "<domain>_labels": label map}`` from the unpaired
    folder layout (``DATA/<domain>/``, ``DATA/<domain>_labels/``) or a datalist JSON; a label map
    belongs to the image with its case id. Several MR contrasts per case (``mr/<case>_0000``, ``_0001``,
    or a list per case in the datalist) become the roles ``mr``, ``mr_0001``, ... of one case, its label
    map named by the case id (``mr_labels/<case>``)."""
    data = Path(data)
    if data.is_file():
        entries = read_datalist(data, (), (*domains, *(f"{d}_labels" for d in domains))).training
        return {d: [e.having([r for r in e if r.startswith(d)]) for e in entries if d in e] for d in domains}
    synthrad = task_cases(data)
    if synthrad is not None:
        return _synthrad_domains(data, synthrad, domains)
    found = discover_unpaired(data, domains, tuple(f"{d}_labels" for d in domains))
    problems = Problems(data)
    _split_channels(found, "mr", problems, unpaired=True)
    problems.raise_if_any()
    cases: dict[str, list[Case]] = {}
    for domain in domains:
        images, labels = found[domain], found[f"{domain}_labels"]
        for cid in sorted(set(labels) - set(images)):
            problems.add(f"{domain}_labels/{labels[cid].name} has no image with its case id in {domain}/")
        cases[domain] = [Case(cid, {**{role: found[role][cid] for role in channel_roles(found, domain)},
                                    **({f"{domain}_labels": labels[cid]} if cid in labels else {})})
                         for cid in sorted(images)]
    problems.raise_if_any()
    return cases


def _several_contrasts(ids: dict[str, Path]) -> bool:
    """Whether ids such as ``a_0000, a_0001, b_0000, b_0001`` name contrasts of several cases rather than
    single-contrast images that happen to end in four digits (``scan_0000, scan_0001, ...``)."""
    groups: dict[str, set[str]] = {}
    for cid in ids:
        base, channel = channel_of(cid)
        groups.setdefault(base, set()).add(channel)
    return len(groups) >= 2 and all("0000" in g for g in groups.values()) and any(len(g) >= 2 for g in groups.values())


def count_labels(label_maps: Sequence[Volume]) -> int:
    """K = largest label + 1 over all label maps; each must hold non-negative integers."""
    largest = 0
    for volume in label_maps:
        values = volume.array
        if values.min() < 0 or not np.array_equal(values, np.rint(values)):
            raise InputError(f"{volume.path}: a label map holds integers 0, 1, 2, ...; this one has negative or "
                             "fractional values. Give the integer label map.")
        largest = max(largest, int(values.max()))
    return largest + 1


def _synthrad_paired(data: Path, cases: dict[str, CaseRoles], required: Sequence[str],
                     optional: Sequence[str]) -> list[Case]:
    """Paired cases of a SynthRAD task folder (``<case>/mr.*``, ``ct.*``, ``mask.*``): every case needs
    every ``required`` role; all missing roles are reported together."""
    problems = Problems(data)
    for cid, roles in sorted(cases.items()):
        missing = [role for role in required if role not in roles]
        if missing:
            problems.add(f"case folder {cid}/ has no {' or '.join(missing)} image")
    problems.raise_if_any()
    return [Case(cid, {role: roles[role] for role in (*required, *optional) if role in roles})
            for cid, roles in sorted(cases.items())]


def _synthrad_domains(data: Path, cases: dict[str, CaseRoles], domains: Sequence[str]) -> dict[str, list[Case]]:
    """Unpaired domains from SynthRAD case folders: each case gives its ``mr`` to one domain and its ``ct``
    to the other (with ``<domain>_labels`` beside); a case folder holding neither is a problem."""
    problems = Problems(data)
    for cid, roles in sorted(cases.items()):
        if not any(d in roles for d in domains):
            problems.add(f"case folder {cid}/ holds no {' or '.join(domains)} image")
    problems.raise_if_any()
    return {d: [Case(cid, {r: p for r, p in roles.items() if r in (d, f"{d}_labels")})
                for cid, roles in sorted(cases.items()) if d in roles] for d in domains}
