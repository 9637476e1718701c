"""Stage fingerprints: everything that determined a stage, so a stage made by other settings is never reused.

A stage's fingerprint hashes, with the fingerprint of the stage before it (so a change anywhere earlier
reaches every later stage):

* the model: the sha256 of its checkpoint files (``olora.core.models.checkpoint_digest``), not its name;
* the method, the seed, and every setting that changes a number (``olora.presets.compared_keys``: LoRA,
  training, data, evaluation, the option sections the method reads), with the machine's choices resolved
  (dtype, mixed precision, how past adapters run);
* the stage's tasks: each task's definition and every training and test example it loaded (so a changed
  data file, sampling size or template shows, wherever the data came from).

``task.json`` keeps the parts next to the digest, so a refused or retrained stage names what changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from olora.data.tasks import Task
from olora.presets import compared_keys, flatten

SETTINGS_ALSO = ("method", "seed")  # not protocol settings (presets.NEUTRAL), but they change a stage's numbers
# Settings added after fingerprints were, left out at their default: stages made before still match.
LEFT_OUT_AT_DEFAULT = {"quantize": "none", "data.train_per_task": None, "data.test_per_task": None}


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def task_digest(task: Task) -> str:
    """The task's definition and every example it loaded, hashed."""
    examples = {split: [[e.text, e.label] for e in getattr(task, split)] for split in ("train", "test")}
    return _sha({**task.to_dict(), **examples})


def run_settings(resolved: dict, ignore: frozenset[str]) -> dict[str, Any]:
    """The flat settings of a resolved config that determine a stage (tasks and the model hashed apart)."""
    flat = flatten(resolved)
    keys = [*compared_keys(resolved, ignore), *SETTINGS_ALSO]
    return {
        k: flat.get(k)
        for k in sorted(set(keys))
        if k != "tasks" and not (k in LEFT_OUT_AT_DEFAULT and flat.get(k) == LEFT_OUT_AT_DEFAULT[k])
    }


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: dict  # {"previous": digest | None, "model": digest, "settings": {...}, "tasks": {name: digest}}

    def to_dict(self) -> dict:
        return {"digest": self.digest, **self.parts}


def stage_fingerprint(
    previous: Fingerprint | None, model: str, settings: dict[str, Any], tasks: list[Task]
) -> Fingerprint:
    parts = {
        "previous": previous.digest if previous else None,
        "model": model,
        "settings": settings,
        "tasks": {t.name: task_digest(t) for t in tasks},
    }
    return Fingerprint(_sha(parts), parts)


def what_changed(saved: dict | None, now: Fingerprint) -> str:
    """One line naming what differs between a saved fingerprint (``task.json``) and the current one."""
    if not saved:
        return "it was made by an olora without stage fingerprints"
    changes = []
    if saved.get("model") != now.parts["model"]:
        changes.append("the model's checkpoint files")
    old, new = saved.get("settings", {}), now.parts["settings"]
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    changes += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
    old_tasks, new_tasks = saved.get("tasks", {}), now.parts["tasks"]
    if list(old_tasks) != list(new_tasks):
        changes.append(f"its tasks {list(old_tasks)} -> {list(new_tasks)}")
    else:
        changes += [f"task {name}'s data or definition" for name in new_tasks if old_tasks[name] != new_tasks[name]]
    if not changes and saved.get("previous") != now.parts["previous"]:
        changes.append("an earlier stage")
    return "; ".join(changes) or "its fingerprint"
