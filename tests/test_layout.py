"""The package's floors: every import goes down (or stays inside its own package), nothing
imports in a circle, and corrtree's own modules are imported at the top of a module, never
inside a function (function-local imports are for optional dependencies only)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "corrtree"

# Lowest first. A module may import from its own floor's package and from lower floors.
FLOORS = {
    "corrtree._": 0,  # private helpers and kernels: _validation, _io, _blas, _bf16, _kernels
    "corrtree.structures": 1,
    "corrtree.nets": 2,
    "corrtree.hardness": 2,
    "corrtree.engines": 3,
    "corrtree.datasets": 3,
    "corrtree.training": 4,
    "corrtree.distributed": 5,
    "corrtree.app.plots": 5,  # figures: used by run folders and the benchmarks
    "corrtree.sklearn": 6,
    "corrtree.app": 6,
    "corrtree.bench": 6,
    "corrtree.app.cli": 7,  # the command line: runs, demo, benchmarks
    "corrtree.__main__": 8,
}
# The package's own __init__ (the public API) sits on top; its lazy attribute for the
# estimators (scikit-learn is slow to import) is a function-local import of corrtree.
# Figures need matplotlib, an optional extra: the run folder imports them when it draws.
# PyTorch is one too: a model's to_torch imports it when asked.
LAZY = {
    ("corrtree", "corrtree.sklearn"),
    ("corrtree.app.run", "corrtree.app.plots"),
    ("corrtree.nets.model", "corrtree.nets._torch"),
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _floor(name: str) -> tuple[int, str]:
    if name == "corrtree":
        return 99, "corrtree"
    for prefix, floor in sorted(FLOORS.items(), key=lambda kv: -len(kv[0])):
        if name == prefix or name.startswith(prefix if prefix.endswith("_") else prefix + "."):
            return floor, prefix
    raise AssertionError(f"{name} has no floor in tests/test_layout.py: give it one")


def _imports(name: str, path: pathlib.Path):
    """(imported corrtree module, is it inside a function) for every import of ``name``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            local.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [mod, *subs]
        for t in targets:
            if t == "corrtree" or t.startswith("corrtree."):
                while t not in MODULES:
                    t = t.rpartition(".")[0]
                if t != name:
                    yield t, id(node) in local


def test_every_import_goes_down_a_floor():
    wrong = []
    for name, path in MODULES.items():
        mine, package = _floor(name)
        for target, _ in _imports(name, path):
            theirs, their_package = _floor(target)
            if theirs > mine or (theirs == mine and their_package != package and mine != 0):
                wrong.append(f"{name} (floor {mine}) imports {target} (floor {theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    graph = {name: {t for t, _ in _imports(name, path)} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules
                continue
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_own_modules_are_imported_at_the_top():
    inside = [
        f"{name} imports {target} inside a function"
        for name, path in MODULES.items()
        for target, local in _imports(name, path)
        if local and (name, target) not in LAZY
    ]
    assert not inside, "\n".join(inside)
