"""The package's layers follow the data flow, and no import runs upward or in a circle.

foundation (config, presets, errors, seeding, faults) → data → core → store → runner → tools → cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import olora

ROOT = Path(olora.__file__).parent
LAYERS = {"foundation": 0, "data": 1, "core": 2, "store": 3, "runner": 4, "tools": 5, "cli": 6}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:  # olora.data.x, olora.core.x, …
        return LAYERS[parts[1]]
    name = parts[1] if len(parts) > 1 else "__init__"
    return {"runner": 4, "cli": 6, "api": 6, "__main__": 6}.get(name, 0)


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
    assert all(mod.startswith("olora") for mod in _imports())
    assert {_layer(m) for m in _imports()} == set(LAYERS.values())
