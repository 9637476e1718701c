"""Prompts in the official format, reading CL_Benchmark folders, and every bad-data error."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from olora.config import DataConfig
from olora.data.load import load_tasks
from olora.data.tasks import INSTRUCTIONS, Example, Task, build_prompt, load_benchmark_task, subsample_per_class
from olora.errors import OloraError

AGNEWS = Task("agnews", "TC", ["World", "Sports", "Business", "Science or Technology"], instruction=INSTRUCTIONS["TC"])


def test_prompt_matches_official_example():
    expected = (
        "Task:TC\nDataset:agnews\nWhat is the topic of the following paragraph? Choose one from the "
        "option.\nOption: World, Sports, Business, Science or Technology \nTitle: X\nText: Y\n\nAnswer:"
    )
    assert build_prompt(AGNEWS, "Title: X\nText: Y\n") == expected


def test_prompt_prefix_is_optional_and_copa_has_no_options():
    assert build_prompt(AGNEWS, "x", add_task_name=False, add_dataset_name=False).startswith("What is the topic")
    copa = Task("COPA", "COPA", ["A", "B"], show_options=False)
    assert build_prompt(copa, "Q?\nA: a\nB: b") == "Task:COPA\nDataset:COPA\nQ?\nA: a\nB: b\nAnswer:"


def _write_task(root, name="toy", group="TC", labels=("yes", "no"), train=None, test=None):
    folder = root / group / name
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text(json.dumps(list(labels)))
    rows = [{"sentence": f"s{i}", "label": labels[i % len(labels)]} for i in range(10)]
    for split, data in (("train", train), ("test", test)):
        content = json.dumps(rows) if data is None else data
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(folder / f"{split}.json", mode) as fh:
            fh.write(content)
    return folder


def test_reads_a_cl_benchmark_folder(tmp_path):
    _write_task(tmp_path)
    task = load_benchmark_task(tmp_path, "toy")
    assert task.task_type == "TC" and task.labels == ["yes", "no"]
    assert task.instruction == INSTRUCTIONS["TC"] and task.show_options  # the reader gives the official prompt
    assert Task.from_dict(task.to_dict()).instruction == task.instruction
    assert len(task.train) == 10 and task.train[1] == Example("s1", "no")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train": '[{"sentence": 1,'}, "malformed JSON at line 1"),
        ({"train": b'[{"sentence": "caf\xe9", "label": "yes"}]'}, "is not UTF-8"),
        ({"train": "[]"}, "has no usable examples"),
        ({"train": '{"a": 1}'}, "must hold a JSON list"),
        ({"test": json.dumps([{"text": "x", "label": "yes"}])}, "needs keys 'sentence' and 'label'"),
        ({"test": json.dumps([{"sentence": "x", "label": "maybe"}])}, "label 'maybe' is not in labels.json"),
        (
            {"train": json.dumps([{"sentence": None, "label": "yes"}])},
            "record 0: 'sentence' must be a string, got null",
        ),
        ({"train": json.dumps([{"sentence": ["a"], "label": "yes"}])}, "'sentence' must be a string"),
        ({"test": json.dumps([{"sentence": "x", "label": 1}])}, "record 0: 'label' must be a string, got 1"),
        ({"labels": ("yes", "no", "yes")}, "lists 'yes' more than once"),
        ({"labels": ("yes", " ")}, "entry 1 is an empty label"),
    ],
)
def test_bad_data_files(tmp_path, kwargs, message):
    _write_task(tmp_path, **kwargs)
    with pytest.raises(OloraError, match=message):
        load_benchmark_task(tmp_path, "toy")


def test_missing_folder_file_and_unknown_task(tmp_path):
    with pytest.raises(OloraError, match="is not a folder"):
        load_benchmark_task(tmp_path / "nope", "toy")
    folder = _write_task(tmp_path, name="agnews")
    with pytest.raises(OloraError, match="did you mean agnews"):
        load_benchmark_task(tmp_path, "agnew")
    (folder / "train.json").unlink()
    with pytest.raises(OloraError, match="train.json' is missing"):
        load_benchmark_task(tmp_path, "agnews")
    with pytest.raises(OloraError, match="not a built-in task.*did you mean 'newsdesk'"):
        load_tasks(["newsdsk"], DataConfig(), 0)


def test_no_gold_label_examples_are_dropped(tmp_path, caplog):
    rows = [{"sentence": "a", "label": "yes"}, {"sentence": "b", "label": "-"}]
    _write_task(tmp_path, test=json.dumps(rows))
    task = load_benchmark_task(tmp_path, "toy")
    assert [e.label for e in task.test] == ["yes"]
    assert "dropped 1 examples" in caplog.text


def test_subsample_per_class_is_seeded_and_balanced():
    examples = [Example(f"s{i}", "ab"[i % 2]) for i in range(40)] + [Example("rare", "c")]
    a = subsample_per_class(examples, 5, 1, "x")
    assert subsample_per_class(examples, 5, 1, "x") == a
    assert subsample_per_class(examples, 5, 2, "x") != a
    assert Counter(e.label for e in a) == {"a": 5, "b": 5, "c": 1}
    with pytest.raises(OloraError, match="larger than the biggest class"):
        subsample_per_class(examples, 21, 1, "data.train_per_class")


def test_real_benchmark_tasks(data_dir):
    tasks = load_tasks(["agnews", "MNLI"], DataConfig(dir=str(data_dir), train_per_class=3, test_per_class=2), seed=0)
    agnews, mnli = tasks
    assert agnews.labels == ["World", "Sports", "Business", "Science or Technology"]
    assert Counter(e.label for e in agnews.train) == {label: 3 for label in agnews.labels}
    assert len(agnews.test) == 8 and agnews.test[0].text.startswith("Title:")
    assert all(e.label != "-" for e in mnli.test) and mnli.task_type == "NLI"


def test_per_task_sizes_give_tasks_with_few_and_many_labels_the_same_test_size_and_steps(data_dir):
    """dbpedia (14 labels) and agnews (4) both get >= 200 test examples, balanced per label; test_per_class
    still caps, and the held-out validation split is capped the same way (it replaces test)."""
    data = DataConfig(dir=str(data_dir), train_per_class=2, test_per_task=200, carve_missing=True)
    dbpedia, agnews = load_tasks(["dbpedia", "agnews"], data, seed=0)
    assert Counter(e.label for e in dbpedia.test) == {label: 15 for label in dbpedia.labels}  # ceil(200/14)
    assert Counter(e.label for e in agnews.test) == {label: 50 for label in agnews.labels}
    capped = load_tasks(["agnews"], DataConfig(dir=str(data_dir), test_per_class=7, test_per_task=200), seed=0)
    assert len(capped[0].test) == 28
    valid = DataConfig(dir=str(data_dir), test_per_task=100, eval_split="validation", validation_per_class=30)
    (agnews,) = load_tasks(["agnews"], valid, seed=0)
    assert Counter(e.label for e in agnews.test) == {label: 25 for label in agnews.labels}
    same_steps = DataConfig(dir=str(data_dir), train_per_task=200, carve_missing=True)
    dbpedia, agnews = load_tasks(["dbpedia", "agnews"], same_steps, seed=0)
    assert (len(dbpedia.train), len(agnews.train)) == (210, 200)  # 15 x 14 labels, 50 x 4
