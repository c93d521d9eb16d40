"""The package imports one way only, down the layers of docs/architecture.md, with no cycle between packages
and none between the modules of one package.

Every ``import`` is read with ``ast``, function-level (lazy) imports included: a lazy import still couples
the two packages (or modules), it only defers the cost.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medsynth

#: Lowest first. A module may import its own package and anything in its layer or below; within a layer the
#: packages must not import each other in a circle. Top-level modules are placed by what they are: the
#: model file and the figures are shared by the engine and inference; training, demo, export, prepare,
#: dose and phantom are what a command does end to end, like the services package.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundation", frozenset({"errors", "choices"})),
    ("io", frozenset({"io"})),
    ("data", frozenset({"data"})),
    ("nets/losses", frozenset({"nets", "losses", "modelfile", "metrics", "baselines", "viz"})),
    ("inference core", frozenset({"inference"})),
    ("engine", frozenset({"engine"})),
    ("families", frozenset({"families"})),
    ("services", frozenset({"services", "training", "demo", "export", "prepare", "dose", "phantom"})),
    ("cli", frozenset({"cli", "__main__"})),
)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of the package's modules that the file imports, anywhere in it."""
    package = root.name
    name = module_name(path, root)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join(base + ([module] if module else []))
            # ``from pkg import io`` imports the package io: each name may be a module
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in found if n == package or n.startswith(package + ".")}


def component(name: str) -> str:
    """The top-level package or module that a dotted module name belongs to ('' for the root package)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level components -> the importing modules, for imports across components."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        for target in imports_of(path, root):
            a, b = component(source), component(target)
            if a != b and b:
                edges.setdefault((a, b), []).append(source)
    return edges


def module_edges(root: Path) -> set[tuple[str, str]]:
    """(importer, imported) modules of one component (a package such as ``io``, subpackages included), each
    import resolved to the module it loads: ``from pkg.io import read_image`` loads ``pkg.io``."""
    modules = {module_name(path, root) for path in root.rglob("*.py")}
    edges = set()
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        for target in imports_of(path, root):
            while target not in modules:  # a name defined in a module, not a module
                target = target.rsplit(".", 1)[0]
            if source != target and component(source) and component(source) == component(target):
                edges.add((source, target))
    return edges


def layering_faults(root: Path, layers=LAYERS) -> list[str]:
    """Every breach of ``layers`` in the package at ``root``: unplaced components, upward imports, cycles between
    components and between the modules of one component."""
    level = {name: i for i, (_, names) in enumerate(layers) for name in names}
    components = {component(module_name(p, root)) for p in root.rglob("*.py")} - {""}
    faults = [f"{c}: in no layer; place it in LAYERS and docs/architecture.md" for c in sorted(components - set(level))]
    edges = package_edges(root)
    for (a, b), sources in sorted(edges.items()):
        if a in level and b in level and level[b] > level[a]:
            faults.append(f"upward import {a} ({layers[level[a]][0]}) -> {b} ({layers[level[b]][0]}) "
                          f"in {', '.join(sorted(set(sources)))}")
    faults += [f"cycle between packages: {' -> '.join(cycle)}" for cycle in _cycles({e for e in edges})]
    faults += [f"cycle between modules: {' -> '.join(cycle)}" for cycle in _cycles(module_edges(root))]
    return faults


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one component (depth-first search)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        stack, path, on_path = [(start, iter(graph.get(start, [])))], [start], {start}
        while stack:
            node, successors = stack[-1]
            successor = next(successors, None)
            if successor is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif successor in on_path:
                cycles.append([*path[path.index(successor):], successor])
            elif successor not in done:
                stack.append((successor, iter(graph.get(successor, []))))
                path.append(successor)
                on_path.add(successor)
    return cycles


def test_medsynth_imports_only_down_the_layers_without_cycles() -> None:
    root = Path(medsynth.__file__).parent
    assert layering_faults(root) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


LOW_HIGH = (("low", frozenset({"low"})), ("high", frozenset({"high"})))


@pytest.mark.parametrize("importer", [
    "from pkg.high import thing\n",
    "import pkg.high.mod\n",
    "def lazy():\n    from pkg.high import thing\n",
    "from ..high import thing\n",
])
def test_an_upward_import_is_found_wherever_it_hides(tmp_path: Path, importer: str) -> None:
    root = _package(tmp_path, {"low/__init__.py": "", "low/mod.py": importer,
                               "high/__init__.py": "", "high/mod.py": "from pkg.low import mod\n"})
    faults = layering_faults(root, LOW_HIGH)
    assert any(f.startswith("upward import low (low) -> high (high) in pkg.low.mod") for f in faults), faults


def test_downward_imports_pass_and_cycles_and_unplaced_modules_fail(tmp_path: Path) -> None:
    layers = (("base", frozenset({"a", "b"})), ("top", frozenset({"c"})))
    clean = _package(tmp_path / "clean", {"a.py": "", "b.py": "import pkg.a\n", "c.py": "from pkg import b\n"})
    assert layering_faults(clean, layers) == []
    circular = _package(tmp_path / "circular", {"a.py": "def f():\n    import pkg.b\n", "b.py": "import pkg.a\n",
                                                "c.py": "", "d.py": ""})
    assert layering_faults(circular, layers) == [
        "d: in no layer; place it in LAYERS and docs/architecture.md", "cycle between packages: a -> b -> a"]


def test_a_cycle_between_modules_of_one_package_is_found_through_a_lazy_import(tmp_path: Path) -> None:
    layers = (("base", frozenset({"a"})),)
    looped = _package(tmp_path / "looped", {"a/__init__.py": "", "a/x.py": "from pkg.a.y import f\n",
                                            "a/y.py": "def f():\n    from pkg.a import x\n"})
    assert layering_faults(looped, layers) == ["cycle between modules: pkg.a.x -> pkg.a.y -> pkg.a.x"]
    # a name of the package's __init__ is an import of the package: a loop when __init__ imports the module back
    through_init = _package(tmp_path / "init", {"a/__init__.py": "from pkg.a.x import g\n",
                                                "a/x.py": "def g():\n    from pkg.a import h\n"})
    assert layering_faults(through_init, layers) == ["cycle between modules: pkg.a -> pkg.a.x -> pkg.a"]
    chain = _package(tmp_path / "chain", {"a/__init__.py": "", "a/x.py": "from pkg.a import y\n", "a/y.py": ""})
    assert layering_faults(chain, layers) == []
