"""Your own tasks: data files read with Hugging Face ``datasets``, records turned into prompts by templates.

A task entry of the config (``TaskSpec``) names a training and a test source, an instruction, and two
templates over a record's fields (``input: "{message}"``, ``target: "{intent}"``). With ``labels`` the
task is a closed label set (listed in the prompt's ``Option:`` line, every target checked, scored by
exact match); without, answers are free-form text (scored by ROUGE-L unless ``metric: exact_match``).

Sources: ``.jsonl``/``.json`` (JSON Lines or one JSON list), ``.csv``, ``.parquet``, a folder written by
``Dataset.save_to_disk``, or ``hf:owner/name`` (needs network; ``hf_config``, ``train_split``, ``test_split``).
"""

from __future__ import annotations

import string
from pathlib import Path

from olora.config import TaskSpec
from olora.data.tasks import Example, Task
from olora.errors import OloraError

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _rows(source: str, split: str, spec: TaskSpec) -> list[dict]:
    """The records of one split, as plain dicts."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    where = f"tasks[{spec.name}].{split}"
    try:
        if source.startswith("hf:"):
            name = source[3:]
            return list(datasets.load_dataset(name, spec.hf_config, split=getattr(spec, f"{split}_split")))
        path = Path(source)
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[getattr(spec, f"{split}_split")]
            return list(loaded)
        if not path.is_file():
            raise OloraError(
                f"{where}: file {source!r} does not exist (relative paths are relative to the config file): "
                "fix the path"
            )
        if path.stat().st_size == 0 or (
            path.suffix.lower() != ".parquet" and not path.read_text(errors="replace").strip()
        ):
            raise OloraError(f"{where}: {source!r} is empty: a split needs records")
        if path.suffix.lower() not in BUILDERS:
            raise OloraError(
                f"{where}: {source!r} has an unknown format {path.suffix!r}: use .jsonl, .json, .csv, .parquet "
                "or a saved datasets folder"
            )
        return list(datasets.load_dataset(BUILDERS[path.suffix.lower()], data_files=str(path), split="train"))
    except OloraError:
        raise
    except Exception as exc:  # datasets/pyarrow raise many types for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OloraError(f"{where}: cannot read {source!r} ({first}): check the file's format") from None


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _render(template: str, record: dict, where: str) -> str:
    missing = [f for f in _fields(template) if f not in record]
    if missing:
        raise OloraError(
            f"{where}: field {missing[0]!r} of template {template!r} is not in the record "
            f"(fields: {', '.join(sorted(record))}); fix the template or the data"
        )
    for name in _fields(template):
        if record[name] is None:
            raise OloraError(f"{where}: field {name!r} is null; fill it or drop the record")
    return template.format(**{k: record[k] for k in _fields(template)})


def _examples(rows: list[dict], spec: TaskSpec, split: str, source: str) -> list[Example]:
    examples = []
    labels = set(spec.labels or [])
    for i, record in enumerate(rows):
        where = f"tasks[{spec.name}].{split} {source!r}, record {i}"
        text, target = _render(spec.input, record, where), _render(spec.target, record, where)
        if not target.strip():
            raise OloraError(f"{where}: the target is empty; every record needs an answer")
        if spec.labels is not None and target not in labels:
            known = ", ".join(spec.labels)
            raise OloraError(f"{where}: target {target!r} is not in labels ({known}); fix the record or add the label")
        examples.append(Example(text, target))
    if not examples:
        raise OloraError(f"tasks[{spec.name}].{split} {source!r} has no records: a split must not be empty")
    return examples


def load_file_task(spec: TaskSpec) -> Task:
    """Read both splits of ``spec`` and return the task, every record checked before any training."""
    train = _examples(_rows(spec.train, "train", spec), spec, "train", spec.train)
    test = _examples(_rows(spec.test, "test", spec), spec, "test", spec.test)
    instruction = (
        spec.instruction if not spec.instruction or spec.instruction.endswith("\n") else spec.instruction + "\n"
    )
    return Task(
        name=spec.name,
        task_type=spec.type or spec.name,
        labels=list(spec.labels or []),
        train=train,
        test=test,
        source=f"{spec.train} | {spec.test}",
        instruction=instruction,
        show_options=spec.labels is not None,
        metric=spec.metric or ("exact_match" if spec.labels is not None else "rouge_l"),
    )
