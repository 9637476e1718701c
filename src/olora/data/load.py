"""Loading a run's tasks: built-in or from a CL_Benchmark folder, then the splits and per-class sizes."""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

from olora.config import DataConfig, TaskSpec, task_name
from olora.data.builtin import BUILTIN_TASKS, builtin_task
from olora.data.files import load_file_task
from olora.data.tasks import Task, load_benchmark_task, stratified_split, subsample_per_class
from olora.errors import OloraError


def load_tasks(names: list[str | TaskSpec], data: DataConfig, seed: int) -> list[Task]:
    """Load and subsample every task before any training, so bad data stops the run early.

    With ``data.eval_split="validation"``, ``validation_per_class`` examples per label are held out
    of train and replace the test split, so tuning never touches test.
    """
    tasks = []
    for entry in names:
        name = task_name(entry)
        if isinstance(entry, TaskSpec):
            task = load_file_task(entry)
        elif data.dir is None:
            if name not in BUILTIN_TASKS:
                close = difflib.get_close_matches(name, BUILTIN_TASKS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise OloraError(
                    f"task {name!r} is not a built-in task ({', '.join(BUILTIN_TASKS)}): {hint}"
                    "or set data.dir to a CL_Benchmark folder"
                )
            task = builtin_task(name)
        else:
            task = load_benchmark_task(Path(data.dir), name, data.carve_missing)
        free_form = not task.labels  # no classes: sizes and held-out splits count examples, not classes
        if data.eval_split == "validation":
            held_out = lambda n, k=data.validation_per_class: min(k, n // 2)  # per label: k, at most half
            task.train, task.test = stratified_split(task.train, held_out, f"{name}:validation", pooled=free_form)
            task.notes.append("evaluated on a validation split carved from train")
        for split in ("train", "test"):
            what = f"data.{split}_per_class[{name}]"
            per_class = getattr(data, f"{split}_per_class")
            per_task = getattr(data, f"{split}_per_task")
            if per_task is not None:
                examples = per_label(getattr(task, split), per_task, free_form)
                per_class = examples if per_class is None else min(per_class, examples)
            setattr(task, split, subsample_per_class(getattr(task, split), per_class, seed, what, pooled=free_form))
        tasks.append(task)
    return tasks


def per_label(examples: list, total: int, pooled: bool) -> int:
    """Examples per label that make about ``total`` in all: ceil(total / labels), at most the largest label's
    count (a cap, never an error: tasks with small labels keep all of them)."""
    counts = Counter("" if pooled else ex.label for ex in examples)
    if not counts:
        return total
    return min(-(-total // len(counts)), max(counts.values()))
