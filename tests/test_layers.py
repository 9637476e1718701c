"""The package's layers follow the data flow, and no import runs upward or in a circle.

foundation (config, presets, errors, seeding, faults) → data → core → methods → store → runner → tools → cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import olora

ROOT = Path(olora.__file__).parent
LAYERS = {"foundation": 0, "data": 1, "core": 2, "methods": 3, "store": 4, "runner": 5, "tools": 6, "cli": 7}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Top-level modules, each named: a new one must be given its layer here (nothing defaults to a layer).
TOP_LEVEL = {
    "olora": 0, "config": 0, "presets": 0, "errors": 0, "seeding": 0, "faults": 0,
    "runner": 5, "api": 7, "cli": 7, "__main__": 7,
}  # fmt: skip


class NoLayer(Exception):
    pass


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:  # olora.data, olora.data.x, olora.core.x, …
        return LAYERS[parts[1]]
    name = parts[1] if len(parts) > 1 else "olora"
    if name not in TOP_LEVEL:
        raise NoLayer(f"{module} has no layer: add it to TOP_LEVEL in tests/test_layers.py")
    return TOP_LEVEL[name]


def _imports() -> dict[str, set[str]]:
    """Every olora module and the olora modules it imports (at module level or inside functions)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("olora"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("olora"))
        graph[_module(path)] = {m for m in found if m != "olora"}  # `from olora import __version__`
    return graph


def test_no_import_runs_upward():
    upward = [
        f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
        for mod, deps in _imports().items()
        for dep in deps
        if _layer(dep) > _layer(mod)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            assert state.get(dep) != 1, "import cycle: " + " → ".join([*path, node, dep])
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_every_module_has_a_layer():
    """Every module (and every module it imports) is placed on a layer, and every layer holds one."""
    graph = _imports()
    modules = set(graph) | {dep for deps in graph.values() for dep in deps}
    assert {_layer(m) for m in modules} == set(LAYERS.values())


def test_an_unknown_module_is_refused_not_put_on_a_layer():
    with pytest.raises(NoLayer):
        _layer("olora.newthing")
    assert _layer("olora.methods") == LAYERS["methods"] and _layer("olora.cli") == LAYERS["cli"]
