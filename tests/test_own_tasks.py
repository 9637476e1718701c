# ruff: noqa: E501  (the table of bad-input cases reads best one case per line)
"""Your own tasks: data files, templates, free-form answers scored by ROUGE-L, task-free inference,
the worked example, the Python API and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli_run
from olora.cli import main
from olora.config import load_config
from olora.data.load import load_tasks
from olora.errors import OloraError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_tasks" / "sequence.yaml"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path) -> Path:
    """A classification task (CSV and JSONL) and a free-form task (a JSON list)."""
    rows = [{"msg": f"message {i}", "tag": ["refund", "delivery"][i % 2]} for i in range(12)]
    _jsonl(tmp_path / "cls.train.jsonl", rows)
    (tmp_path / "cls.test.csv").write_text(
        "msg,tag\n" + "".join(f"m{i},{['refund', 'delivery'][i % 2]}\n" for i in range(4))
    )
    notes = [{"note": f"note number {i} about the plan", "summary": f"plan {i} agreed"} for i in range(10)]
    (tmp_path / "sum.train.json").write_text(json.dumps(notes))
    _jsonl(tmp_path / "sum.test.jsonl", notes[:4])
    (tmp_path / "seq.yaml").write_text(
        "tasks:\n"
        "  - {name: cls, train: cls.train.jsonl, test: cls.test.csv, instruction: 'Which team?', input: '{msg}',"
        " target: '{tag}', labels: [refund, delivery]}\n"
        "  - {name: sum, train: sum.train.json, test: sum.test.jsonl, instruction: Summarise., input: '{note}',"
        " target: '{summary}'}\n"
    )
    return tmp_path


def test_tasks_from_files_with_templates_relative_to_the_yaml(files, monkeypatch):
    monkeypatch.chdir("/")  # paths are relative to the YAML, not the working directory
    cfg = load_config(files / "seq.yaml")
    cls, summ = load_tasks(cfg.tasks, cfg.data, cfg.seed)
    assert cls.labels == ["refund", "delivery"] and cls.metric == "exact_match" and len(cls.test) == 4
    assert cls.train[1].text == "message 1" and cls.train[1].label == "delivery"
    assert summ.labels == [] and summ.metric == "rouge_l" and summ.test[0].label == "plan 0 agreed"
    head, tail = cls.prompt_parts()
    assert head == "Task:cls\nDataset:cls\nWhich team?\nOption: refund, delivery \n" and tail == "\nAnswer:"
    assert summ.prompt_parts(False, False)[0] == "Summarise.\n"  # free-form: no Option: line


def test_mixed_sequence_runs_end_to_end_with_rouge_l_from_the_library(tiny_dirs, data_dir, files, tmp_path):
    """A CL_Benchmark task, a JSONL classification task, then a free-form task."""
    from rouge_score import rouge_scorer

    cfg = (files / "seq.yaml").read_text().replace("tasks:\n", "tasks:\n  - agnews\n")
    (files / "mixed.yaml").write_text(cfg + f"data: {{dir: {data_dir}, train_per_class: 2, test_per_class: 2}}\n")
    out = tmp_path / "mixed"
    assert main(["run", str(files / "mixed.yaml"), f"model={tiny_dirs['llama']}", "train.max_steps=2",
                 "data.max_source_length=240", f"output_dir={out}"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == ["agnews", "cls", "sum"] and [len(r) for r in res["matrix"]] == [1, 2, 3]
    assert res["metrics"] == ["exact_match", "exact_match", "rouge_l"]
    rows = [json.loads(x) for x in (out / "tasks" / "2-sum" / "predictions.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score(r["gold"], r["prediction"])["rougeL"].fmeasure for r in rows if r["task"] == "sum"]
    assert res["matrix"][2][2] == pytest.approx(round(100 * sum(expected) / len(expected), 4))


def test_the_worked_example_runs(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "example"
    args = ["run", str(EXAMPLE), f"model={tiny_dirs['llama']}", "train.max_steps=2", f"output_dir={out}"]
    assert main([*args, "data.max_source_length=256"]) == 0
    assert "summaries ROUGE-L F1 %" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == ["intents", "priority", "summaries"] and len(res["matrix"]) == 3
    assert main(["show", str(out)]) == 0 and "summaries ROUGE-L" in capsys.readouterr().out


def _bad(tmp_path, spec: str, files_: dict[str, str] | None = None) -> str:
    for name, text in (files_ or {}).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "bad.yaml").write_text("tasks:\n  - " + spec + "\n")
    with pytest.raises(OloraError) as info:
        cfg = load_config(tmp_path / "bad.yaml")
        load_tasks(cfg.tasks, cfg.data, 0)
    return str(info.value)


GOOD = '{"text": "a", "y": "p"}\n'


@pytest.mark.parametrize(
    "spec, files_, message",
    [
        ("{name: t, train: tr.jsonl, test: te.jsonl, input: '{txt}', target: '{y}'}", {"tr.jsonl": GOOD, "te.jsonl": GOOD},
         "record 0: field 'txt' of template '{txt}' is not in the record (fields: text, y)"),
        ("{name: t, train: tr.jsonl, test: te.jsonl, input: '{text}', target: '{y}'}", {"tr.jsonl": '{"text": "a", "y": " "}\n', "te.jsonl": GOOD},
         "record 0: the target is empty"),
        ("{name: t, train: tr.jsonl, test: te.jsonl, input: '{text}', target: '{y}', labels: [q]}", {"tr.jsonl": GOOD, "te.jsonl": GOOD},
         "target 'p' is not in labels (q)"),
        ("{name: t, train: tr.txt, test: te.jsonl}", {"tr.txt": "x", "te.jsonl": GOOD}, "unknown format '.txt'"),
        ("{name: t, train: nowhere.jsonl, test: te.jsonl}", {"te.jsonl": GOOD}, "relative paths are relative to the config file"),
        ("{name: t, train: tr.jsonl, test: te.jsonl, labels: [p], metric: rouge_l}", {}, "tasks[t].metric='rouge_l' is invalid"),
        ("{name: t, train: tr.jsonl, test: te.jsonl}\n  - {name: t, train: tr.jsonl, test: te.jsonl}", {}, "each task may appear once (repeated: t)"),
        ("{name: t, train: tr.jsonl, test: te.jsonl, inpt: x}", {}, "unknown config key 'tasks[t].inpt': did you mean tasks[t].input?"),
        ("{name: t, train: tr.jsonl, test: te.jsonl, input: '{text}', target: '{y}'}", {"tr.jsonl": '{"text": "a", "y": null}\n', "te.jsonl": GOOD},
         "field 'y' is null"),
        ("{name: t, train: tr.jsonl, test: te.jsonl}", {"tr.jsonl": "{not json\n", "te.jsonl": GOOD}, "tasks[t].train: cannot read"),
    ],
)  # fmt: skip
def test_bad_task_files_are_one_clear_error(tmp_path, spec, files_, message):
    assert message in _bad(tmp_path, spec, files_)


def test_bad_task_file_exits_2_with_nothing_written(tiny_dirs, tmp_path, capsys):
    (tmp_path / "tr.jsonl").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(
        "tasks:\n  - {name: t, train: tr.jsonl, test: missing.jsonl, input: '{text}', target: '{y}'}\n"
    )
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "bad.yaml"), f"model={tiny_dirs['llama']}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jsonl" in err[0] and not out.exists()


def test_task_free_predict_equals_the_runs_predictions(tiny_dirs, tmp_path, capsys):
    """Without --task, a whole prompt goes to the model with every adapter: the run's answers come back."""
    from olora.data.tasks import Task, build_prompt
    from olora.tools.export import export_run

    out = tmp_path / "run"
    flags = ["data.add_task_name=false", "data.add_dataset_name=false", "train.lr=0.05"]
    cli_run(tiny_dirs["llama"], out, *flags, tasks="[sentiment,newsdesk,helpline]")
    record = json.loads((out / "tasks" / "2-helpline" / "task.json").read_text())
    rows = [json.loads(x) for x in (out / "tasks" / "2-helpline" / "predictions.jsonl").read_text().splitlines()]
    task = Task.from_dict(record["tasks"][0])
    rows = [r for r in rows if r["task"] == task.name]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"input": build_prompt(task, r["input"], False, False)}) + "\n" for r in rows)
    )
    export_run(out, "adapter", tmp_path / "adapter")
    for source in (out, tmp_path / "adapter"):
        pred = tmp_path / f"pred-{source.name}.jsonl"
        assert main(["predict", str(source), "--file", str(prompts), "-o", str(pred)]) == 0
        assert [json.loads(x)["prediction"] for x in pred.read_text().splitlines()] == [r["prediction"] for r in rows]


def test_python_api_in_three_lines(tiny_dirs, tmp_path):
    from olora.api import load_config as api_config
    from olora.api import run

    results = run("demo", {"model": str(tiny_dirs["llama"]), "train.max_steps": 1, "data.train_per_class": 2,
                           "data.test_per_class": 1, "tasks": ["sentiment", "newsdesk"], "output_dir": str(tmp_path / "nb")})  # fmt: skip
    assert [len(r) for r in results["matrix"]] == [1, 2] and results["aa"] == pytest.approx(
        sum(results["matrix"][1]) / 2
    )
    assert api_config(None, ["train.lr=0.5"]).train.lr == 0.5


def test_export_writes_a_model_card(tiny_dirs, tmp_path):
    from olora.tools.export import export_run

    out = tmp_path / "run"
    cli_run(tiny_dirs["llama"], out)
    card = (export_run(out, "adapter", tmp_path / "adapter") / "README.md").read_text()
    meta = card.split("---")[1]
    assert "library_name: peft" in meta and "base_model:" in meta and "continual-learning" in meta
    assert "sentiment → newsdesk" in card and "AA " in card and "olora 0.2" in card
    merged = (export_run(out, "merged", tmp_path / "merged") / "README.md").read_text()
    assert "library_name: transformers" in merged
