"""The run folder: the one place that knows its layout.

OUT/config.yaml                         the resolved config
OUT/progress.json                       running | failed | complete, and the rows so far
OUT/results.json                        written once, when the whole sequence is done
OUT/base_scores.json                    the untrained model's scores (eval.forward_transfer)
OUT/tasks/<i>-<name>/adapter/           stage i's adapter, standard PEFT format
OUT/tasks/<i>-<name>/model/             stage i's whole model (full fine-tuning methods)
OUT/tasks/<i>-<name>/state.safetensors  the method's own state after stage i (EWC's Fisher)
OUT/tasks/<i>-<name>/predictions.jsonl  every evaluated example after stage i
OUT/tasks/<i>-<name>/train_log.jsonl    nll, penalties and loss every train.log_every steps
OUT/tasks/<i>-<name>/task.json          the stage's tasks, accuracy row, timings
OUT/tasks/<i>-<name>/manifest.json      sha256 of the files above; written last, so a stage is
                                        complete exactly when its manifest exists and verifies
OUT/tasks/<i>-<name>/checkpoint/        step checkpoint while the stage trains (removed after)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from olora.errors import OloraError
from olora.presets import flatten
from olora.store.checkpoint import MANIFEST, verify_manifest, write_manifest
from olora.store.fingerprint import LEFT_OUT_AT_DEFAULT
from olora.store.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

log = logging.getLogger(__name__)

# The config keys whose ``auto`` the run resolves for its machine, and their names in results.json's "resources".
RESOLVED_AS = {"dtype": "dtype", "train.mixed_precision": "mixed_precision"}


class StageFolder:
    """``OUT/tasks/<index>-<label>``: one stage's files."""

    def __init__(self, root: Path, index: int, label: str):
        self.index, self.label = index, label
        self.path = root / "tasks" / f"{index}-{label}"
        self.adapter = self.path / "adapter"
        self.model = self.path / "model"
        self.state = self.path / "state.safetensors"
        self.predictions = self.path / "predictions.jsonl"
        self.train_log = self.path / "train_log.jsonl"
        self.record = self.path / "task.json"
        self.checkpoint = self.path / "checkpoint"

    def completed(self) -> dict | None:
        """The stage's task.json if its manifest exists and every file matches; damaged files are named."""
        if not (self.path / MANIFEST).is_file():
            return None
        bad = verify_manifest(self.path)
        if bad:
            log.warning("%s: %s damaged or missing; recomputing this task", self.path, ", ".join(bad))
            self.invalidate()
            return None
        return json.loads(self.record.read_text(encoding="utf-8"))

    def invalidate(self) -> None:
        """Forget that the stage is complete (it will be recomputed)."""
        (self.path / MANIFEST).unlink(missing_ok=True)

    def finish(self, record: dict, predictions: list[dict]) -> None:
        """Write the record and predictions, then the manifest of everything the stage holds."""
        atomic_write_jsonl(self.predictions, predictions)
        self.update_record(record)
        shutil.rmtree(self.checkpoint, ignore_errors=True)

    def update_record(self, record: dict) -> None:
        """Rewrite task.json and the manifest (a reused stage that gained a number)."""
        atomic_write_json(self.record, record)
        files = [
            str(p.relative_to(self.path))
            for p in sorted(self.path.rglob("*"))
            if p.is_file()
            and p.name != MANIFEST
            and not any(part.startswith(".") or part == "checkpoint" for part in p.relative_to(self.path).parts)
        ]
        write_manifest(self.path, files)


class RunFolder:
    """A run's output folder: prepare it, name its files, read what a finished run left."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.progress = self.root / "progress.json"
        self.results = self.root / "results.json"
        self.base_scores = self.root / "base_scores.json"
        self.tensorboard = self.root / "tensorboard"

    def stage(self, index: int, label: str) -> StageFolder:
        return StageFolder(self.root, index, label)

    def prepare(self, config: dict[str, Any], force: bool) -> None:
        """Create the folder, or check that an existing one holds a run of the same config (resume) or of the
        same config with fewer tasks (a run that grows by the new tasks). Whatever is reused, a stage is only
        reused if its fingerprint matches (olora.store.fingerprint); ``force`` accepts other settings, and the
        stages they change are trained again."""
        out = self.root
        if out.exists() and not out.is_dir():
            raise OloraError(f"output_dir {str(out)!r} is a file: choose a folder path")
        if self.config.is_file():
            changes, tasks = self.config_changes(config), self.task_changes(config)
            if changes and not force:
                raise OloraError(
                    f"output_dir {str(out)!r} holds a run with a different config ({'; '.join(changes)}"
                    f"{'; tasks: ' + tasks if tasks else ''}): use another output_dir, or --force to continue it "
                    "(every task those settings change is trained again)"
                )
            if tasks and not tasks.startswith("+") and not force:
                raise OloraError(
                    f"output_dir {str(out)!r} holds a run of other tasks ({tasks}): a run can only grow by tasks "
                    "after its own; use another output_dir, or --force to retrain from the first change"
                )
            if tasks:
                log.info("%s: the run's tasks change: %s", out, tasks)
        elif out.is_dir() and any(out.iterdir()) and not force:
            raise OloraError(f"output_dir {str(out)!r} is not empty and is not an olora run: choose another")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise OloraError(f"output_dir {str(out)!r} is not writable ({exc.strerror}): choose another") from None
        atomic_write_text(self.config, yaml.safe_dump(config, sort_keys=False))

    def saved_config(self) -> dict:
        if not self.config.is_file():
            return {}
        return yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}

    def config_changes(self, config: dict[str, Any]) -> list[str]:
        """``key: saved -> new`` for each setting where ``config`` differs from the folder's config.yaml
        ([] if it has none). ``output_dir`` is left out (a moved folder holds the same run), and so is the
        task list (``task_changes``) and a setting added after the folder was made, at its default. A saved
        ``auto`` that the finished run resolved (``resolved_choices``) compares as the value it ran as (not the
        other way: a saved value against a new ``auto`` is a change, auto's value is known only when it runs)."""
        if not self.config.is_file():
            return []
        old, new = flatten(self.saved_config()), flatten(config)
        added = {k for k in new.keys() - old.keys() if k in LEFT_OUT_AT_DEFAULT and new[k] == LEFT_OUT_AT_DEFAULT[k]}
        ignored = {"output_dir", "tasks", *added}
        ran = {k: v for k, v in self.resolved_choices().items() if old.get(k) == "auto" and new.get(k) != "auto"}
        shown = {k: f"'auto' (ran as {v!r})" for k, v in ran.items()}
        old.update(ran)
        keys = sorted(k for k in old.keys() | new.keys() if k not in ignored and old.get(k) != new.get(k))
        return [f"{k}: {shown.get(k, repr(old.get(k)))} -> {new.get(k)!r}" for k in keys]

    def resolved_choices(self) -> dict[str, Any]:
        """``{config key: value}`` of the machine choices a finished run made for its ``auto`` settings (from
        results.json's ``resources``): ``train.mixed_precision=auto`` is bf16 on one CPU and none on another,
        so a saved ``auto`` compares as what it ran as. {} for a run that has not finished."""
        resources = (self.finished_results() or {}).get("resources") or {}
        return {
            key: resources[name]["value"] for key, name in RESOLVED_AS.items() if isinstance(resources.get(name), dict)
        }

    def task_changes(self, config: dict[str, Any]) -> str:
        """How the task list differs from the saved one, briefly: ``+[c, d]`` (added after the run's own),
        ``-[b]`` (removed), ``changed: a`` (same name, other definition), ``reordered``; '' if equal."""
        old, new = self.saved_config().get("tasks") or [], config.get("tasks") or []
        if not self.config.is_file() or old == new:
            return ""
        name = lambda t: t["name"] if isinstance(t, dict) else str(t)  # noqa: E731
        old_names, new_names = [name(t) for t in old], [name(t) for t in new]
        if new[: len(old)] == old:
            return f"+[{', '.join(new_names[len(old) :])}]"
        parts = []
        added = [n for n in new_names if n not in old_names]
        removed = [n for n in old_names if n not in new_names]
        changed = [n for n in new_names if n in old_names and old[old_names.index(n)] != new[new_names.index(n)]]
        if added:
            parts.append(f"added [{', '.join(added)}]")
        if removed:
            parts.append(f"removed [{', '.join(removed)}]")
        if changed:
            parts.append(f"changed [{', '.join(changed)}]")
        if not parts:
            parts.append("reordered")
        return ", ".join(parts)

    def write_progress(self, progress: dict) -> None:
        atomic_write_json(self.progress, progress)

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results, results)

    def load_results(self) -> dict:
        """results.json of a finished run, or a one-line error naming the problem."""
        if not self.results.is_file():
            raise OloraError(f"{str(self.results)!r} does not exist: is {str(self.root)!r} a finished olora run?")
        try:
            return json.loads(self.results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise OloraError(
                f"{str(self.results)!r} is not valid JSON ({exc.msg}): re-run the command to rebuild it"
            ) from None

    def finished_results(self) -> dict | None:
        """results.json if the run completed, else None (no error: a grid re-runs it)."""
        try:
            res = json.loads(self.results.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return res if res.get("status") == "complete" else None

    def stage_records(self) -> list[dict]:
        """Every stage's task.json, in stage order."""
        records = [json.loads(p.read_text(encoding="utf-8")) for p in (self.root / "tasks").glob("*/task.json")]
        return sorted(records, key=lambda r: r["index"])

    def stages(self) -> list[StageFolder]:
        return [self.stage(r["index"], r["name"]) for r in self.stage_records()]

    def train_logs(self) -> dict[str, list[dict]]:
        """{stage label: rows of its train_log.jsonl} for the stages that have one."""
        logs = {}
        for stage in self.stages():
            if stage.train_log.is_file():
                lines = stage.train_log.read_text(encoding="utf-8").splitlines()
                logs[stage.label] = [json.loads(line) for line in lines if line.strip()]
        return logs
