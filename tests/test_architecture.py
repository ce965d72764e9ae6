"""The shape of the code: no import circle, imports run one way, no module over 500 lines.

Run alone with ``python -m pytest tests/test_architecture.py``; it reads the sources with ``ast`` and
imports nothing of dropkit, so it needs neither torch nor numba.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dropkit"
MAX_LINES = 500

# The rooms, lowest first: a module may import only from its own room or a lower one.
# (_validation <- philox <- kernels <- sharding <- NumPy families <- torch <- experiments <- cli)
ROOMS = [
    ("dropkit._validation",),
    ("dropkit.philox",),
    ("dropkit.kernels",),
    ("dropkit.sharding",),
    (
        "dropkit.layers",
        "dropkit.noise",
        "dropkit.dropblock",
        "dropkit.dropconnect",
        "dropkit.attention",
        "dropkit.nn",
        "dropkit.mc",
        "dropkit.trace",
        "dropkit._base",
        "dropkit",  # the NumPy face's __init__
    ),
    ("dropkit.torch",),
    ("dropkit.experiments",),
    ("dropkit.bench", "dropkit.cli", "dropkit.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The dropkit modules ``name`` imports, at the top or inside a function (a lazy import counts)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: dropkit uses absolute imports only"
            base = node.module or ""
            # "from pkg import sub" imports the submodule sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def room(name: str) -> int:
    best = None
    for rank, members in enumerate(ROOMS):
        for member in members:
            if (name == member or name.startswith(member + ".")) and (best is None or len(member) > best[1]):
                best = (rank, len(member))
    assert best is not None, f"{name} is in no room: add it to ROOMS and docs/architecture.md"
    return best[0]


def test_the_walk_sees_the_package():
    assert {"dropkit", "dropkit.torch", "dropkit.torch._ops", "dropkit.kernels"} <= set(MODULES)
    assert "dropkit.kernels" in GRAPH["dropkit.sharding"]


def test_there_is_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name):
    upward = sorted(t for t in GRAPH[name] if room(t) > room(name))
    assert not upward, f"{name} (room {room(name)}) imports from higher rooms: {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(SRC)} has {lines} lines; split it by concern"


def test_the_torch_checks_are_a_leaf():
    assert not any(t.startswith("dropkit.torch") for t in GRAPH["dropkit.torch._checks"])
