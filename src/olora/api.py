"""Python API: olora from a notebook in three lines.

    from olora.api import run
    results = run("examples/own_tasks/sequence.yaml", {"train.epochs": 2, "output_dir": "runs/nb"})
    results["matrix"], results["aa"], results["bwt"]

``grow(run_dir, ["yelp"])`` adds tasks to a finished run (only they train; olora.runner reuses the rest).

``run`` takes a YAML path, a packaged config name (``"demo"``), a ``RunConfig``, or nothing (the
defaults), plus overrides as ``{"dotted.key": value}`` or ``["dotted.key=value", ...]``; it returns the
dict that ``results.json`` holds. ``load_config`` is the same resolution without running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from olora.config import RunConfig, packaged_config
from olora.config import load_config as _load_config
from olora.methods import METHODS  # noqa: F401  (registers every method's option section before parsing)


def load_config(config: str | Path | RunConfig | None = None, overrides: dict | list | None = None) -> RunConfig:
    """The resolved config (presets applied, values checked) for ``config`` plus ``overrides``."""
    if isinstance(config, RunConfig):
        if overrides:
            raise ValueError("give overrides with a YAML path or None, not with a RunConfig: edit its fields")
        return config
    if isinstance(overrides, dict):
        dumped = (yaml.safe_dump(v, default_flow_style=True, width=10**6).strip() for v in overrides.values())
        overrides = [f"{key}={text.removesuffix('...').strip()}" for key, text in zip(overrides, dumped, strict=True)]
    if isinstance(config, str) and not Path(config).exists() and packaged_config(config).is_file():
        config = packaged_config(config)
    return _load_config(config, list(overrides or []))


def run(
    config: str | Path | RunConfig | None = None, overrides: dict | list | None = None, force: bool = False
) -> dict[str, Any]:
    """Train and evaluate the task sequence; return the results (matrix, aa, bwt, forgetting, …)."""
    from olora.runner import run as run_sequence

    return run_sequence(load_config(config, overrides), force=force)


def grow(
    run_dir: str | Path, tasks: list[str | dict], overrides: dict | list | None = None, force: bool = False
) -> dict[str, Any]:
    """Add ``tasks`` (names, or task mappings as in a YAML file) after a finished or partly finished run's
    own and run it: only the new tasks train, every task is scored after each; returns the grown results."""
    import tempfile

    from olora.errors import OloraError
    from olora.runner import run as run_sequence

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise OloraError(f"{str(run_dir)!r} holds no olora run (no config.yaml): give a run folder")
    tree = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    tree["tasks"] = [*(tree.get("tasks") or []), *tasks]
    with tempfile.TemporaryDirectory() as scratch:
        grown = Path(scratch) / "config.yaml"  # the saved config's paths are absolute: it reads the same here
        grown.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
        cfg = load_config(grown, overrides)
    return run_sequence(cfg, force=force)
