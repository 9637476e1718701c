"""Python API: olora from a notebook in three lines.

    from olora.api import run
    results = run("examples/own_tasks/sequence.yaml", {"train.epochs": 2, "output_dir": "runs/nb"})
    results["matrix"], results["aa"], results["bwt"]

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
