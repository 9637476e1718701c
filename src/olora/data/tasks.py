"""Tasks: examples, labels and the official instruction prompt.

A task is text-to-text: the prompt is

    [Task:<type>\\n][Dataset:<name>\\n]<instruction>Option: <l1>, <l2>, ... \\n<text>\\nAnswer:

and the target is the label text (official protocol, section 2.3 of the protocol notes). COPA has no
instruction and no option line. Data is read from a CL_Benchmark folder laid out as
``<group>/<task>/{train,test,labels}.json``; the group is the task type.
"""

from __future__ import annotations

import difflib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from olora.errors import OloraError

log = logging.getLogger(__name__)

# Official zero-shot instructions per task type (configs/instruction_config.json of the O-LoRA repo).
INSTRUCTIONS = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.\n",
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option.\n",
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or "
    "false? Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both "
    "sentence? Choose one from the option.\n",
    "COPA": "",
}
# The "no gold label" marker of MultiNLI; such examples can never be scored, so they are dropped.
NO_GOLD_LABELS = {"-"}


@dataclass
class Example:
    text: str
    label: str


@dataclass
class Task:
    name: str
    task_type: str
    labels: list[str]
    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    source: str = "builtin"  # where the examples come from: a folder, files, or "builtin"
    notes: list[str] = field(default_factory=list)  # how the splits depart from those files (deviations)
    instruction: str = ""  # the task definition before the options, e.g. "What is the topic …?\n"
    show_options: bool = True  # the "Option: a, b, c" line (COPA has none: its options are in the text)
    metric: str = "exact_match"  # or "rouge_l" for free-form answers (tasks without labels)
    longest_target: str = ""  # free-form tasks: the longest training answer (sets the generation budget)

    def __post_init__(self) -> None:
        if not self.labels and self.train and not self.longest_target:
            self.longest_target = max((e.label for e in self.train), key=len)

    def prompt_parts(self, add_task_name: bool = True, add_dataset_name: bool = True) -> tuple[str, str]:
        """(head, tail) around the example text: only the text between them may be truncated."""
        head = ""
        if add_task_name:
            head += f"Task:{self.task_type}\n"
        if add_dataset_name:
            head += f"Dataset:{self.name}\n"
        head += self.instruction
        if self.show_options:
            head += "Option: " + ", ".join(self.labels) + " \n"
        return head, "\nAnswer:"

    def to_dict(self) -> dict:
        """The definition needed to rebuild prompts later (no examples)."""
        return {
            "name": self.name,
            "task_type": self.task_type,
            "labels": self.labels,
            "source": self.source,
            "notes": self.notes,
            "instruction": self.instruction,
            "show_options": self.show_options,
            "metric": self.metric,
            "longest_target": self.longest_target,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        """A task definition saved by ``to_dict`` (runs of olora < 0.2 saved no instruction: the official one)."""
        official = d["task_type"] in INSTRUCTIONS
        return cls(
            d["name"],
            d["task_type"],
            list(d["labels"]),
            source=d.get("source", ""),
            notes=list(d.get("notes", [])),
            instruction=d.get("instruction", INSTRUCTIONS.get(d["task_type"], "")),
            show_options=d.get("show_options", d["task_type"] != "COPA" if official else True),
            metric=d.get("metric", "exact_match"),
            longest_target=d.get("longest_target", ""),
        )


def build_prompt(task: Task, text: str, add_task_name: bool = True, add_dataset_name: bool = True) -> str:
    head, tail = task.prompt_parts(add_task_name, add_dataset_name)
    return head + text + tail


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise OloraError(f"data file {str(path)!r} is missing: check data.dir points at a CL_Benchmark folder")
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OloraError(f"data file {str(path)!r} is not UTF-8 (byte {exc.start}): re-encode it as UTF-8") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OloraError(
            f"data file {str(path)!r} is malformed JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}; fix or re-download the file"
        ) from None


def read_labels(path: Path) -> list[str]:
    labels = _read_json(path)
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise OloraError(f"labels file {str(path)!r} must be a non-empty JSON list of strings")
    empty = [i for i, x in enumerate(labels) if not x.strip()]
    if empty:
        raise OloraError(f"labels file {str(path)!r}: entry {empty[0]} is an empty label; remove it or name it")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise OloraError(f"labels file {str(path)!r} lists {dupes[0]!r} more than once; keep one of each label")
    return labels


def read_split(path: Path, labels: list[str]) -> list[Example]:
    """Read ``[{"sentence": ..., "label": ...}, ...]``, checking every record against ``labels``."""
    records = _read_json(path)
    if not isinstance(records, list):
        raise OloraError(f"data file {str(path)!r} must hold a JSON list of {{sentence, label}} records")
    known = set(labels)
    examples, dropped = [], 0
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "sentence" not in rec or "label" not in rec:
            raise OloraError(
                f"data file {str(path)!r}, record {i}: needs keys 'sentence' and 'label', "
                f"got {sorted(rec) if isinstance(rec, dict) else type(rec).__name__}"
            )
        for key in ("sentence", "label"):
            if not isinstance(rec[key], str):
                raise OloraError(
                    f"data file {str(path)!r}, record {i}: {key!r} must be a string, got {json.dumps(rec[key])}; "
                    "fix or drop the record"
                )
        label = rec["label"]
        if label in NO_GOLD_LABELS and label not in known:
            dropped += 1
            continue
        if label not in known:
            raise OloraError(
                f"data file {str(path)!r}, record {i}: label {label!r} is not in labels.json "
                f"({', '.join(labels)}); fix the record or add the label"
            )
        examples.append(Example(rec["sentence"], label))
    if dropped:
        log.warning("%s: dropped %d examples whose gold label is '-' (no gold label)", path, dropped)
    if not examples:
        raise OloraError(f"data file {str(path)!r} has no usable examples: a split must not be empty")
    return examples


def find_task_dir(data_dir: Path, name: str) -> Path:
    """``<data_dir>/<group>/<name>``; the unknown-name error lists the nearest known tasks."""
    if not data_dir.is_dir():
        raise OloraError(
            f"data.dir {str(data_dir)!r} is not a folder: point it at a CL_Benchmark folder "
            "(e.g. data.dir=../shared/cl_benchmark/CL_Benchmark)"
        )
    found = sorted(p for p in data_dir.glob(f"*/{name}") if p.is_dir())
    if found:
        return found[0]
    known = sorted(p.name for p in data_dir.glob("*/*") if p.is_dir())

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"known tasks: {', '.join(known) or 'none'}"
    raise OloraError(f"task {name!r} is not in data.dir {str(data_dir)!r}: {hint}")


CARVE_SEED = "olora-carve"  # carved splits do not depend on the run's seed: every seed sees the same data


def stratified_split(
    examples: list[Example], take: Callable[[int], int], salt: str, pooled: bool = False
) -> tuple[list[Example], list[Example]]:
    """Split per label: ``take(n)`` of a label's n examples (seeded choice) go to the second part
    (``pooled``: all examples form one group, for free-form tasks whose answers are not classes).

    Deterministic, disjoint, original order kept in both parts."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label["" if pooled else ex.label].append(i)
    rng = random.Random(f"{CARVE_SEED}:{salt}")
    second: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        second.update(rng.sample(idx, take(len(idx))))
    return (
        [ex for i, ex in enumerate(examples) if i not in second],
        [ex for i, ex in enumerate(examples) if i in second],
    )


def _half(n: int) -> int:
    return n // 2


def load_benchmark_task(data_dir: Path, name: str, carve_missing: bool = False) -> Task:
    """Read one task; with ``carve_missing``, a missing train or test split is carved from the other."""
    task_dir = find_task_dir(Path(data_dir), name)
    labels = read_labels(task_dir / "labels.json")
    has_train, has_test = (task_dir / "train.json").is_file(), (task_dir / "test.json").is_file()
    notes = []
    if carve_missing and has_test and not has_train:
        train, test = stratified_split(read_split(task_dir / "test.json", labels), _half, f"{name}:test")
        notes.append("train carved from test.json: NOT the paper's split")
    elif carve_missing and has_train and not has_test:
        train, test = stratified_split(read_split(task_dir / "train.json", labels), _half, f"{name}:train")
        notes.append("test carved from train.json: NOT the paper's split")
    else:
        missing = [f for f, ok in (("train.json", has_train), ("test.json", has_test)) if not ok]
        if missing:
            raise OloraError(
                f"data file {str(task_dir / missing[0])!r} is missing: get the full CL_Benchmark folder "
                "(github.com/cmnfriend/O-LoRA), or set data.carve_missing=true (or benchmark=proxy) to carve "
                "it from the other split"
            )
        train, test = read_split(task_dir / "train.json", labels), read_split(task_dir / "test.json", labels)
    group = task_dir.parent.name
    return Task(
        name=name,
        task_type=group,
        labels=labels,
        train=train,
        test=test,
        source=str(task_dir),
        notes=notes,
        instruction=INSTRUCTIONS.get(group, ""),
        show_options=group != "COPA",  # COPA's A/B options are inside its sentence (official template)
    )


def subsample_per_class(
    examples: list[Example], per_class: int | None, seed: int | str, what: str, pooled: bool = False
) -> list[Example]:
    """At most ``per_class`` examples of each label (``pooled``: of the whole task), chosen by a seeded
    RNG, original order kept."""
    if per_class is None:
        return examples
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label["" if pooled else ex.label].append(i)
    largest = max(len(v) for v in by_label.values())
    if per_class > largest and not pooled:  # a free-form task smaller than the cap is used whole
        raise OloraError(
            f"{what}={per_class} is larger than the biggest class ({largest} examples): "
            f"use at most {largest} or null for all"
        )
    rng = random.Random(f"{seed}:{what}")
    keep = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += idx if len(idx) <= per_class else rng.sample(idx, per_class)
    return [examples[i] for i in sorted(keep)]
