"""Tasks arrive over time: a finished run or an export grows by a task, and no stage made by other settings
is ever reused (stage fingerprints)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import olora.runner
from conftest import adapter_weights, cli_run, run_args
from olora.cli import main

TWO, THREE = "[sentiment,newsdesk]", "[sentiment,newsdesk,helpline]"
STAGES = ("0-sentiment", "1-newsdesk", "2-helpline")
COMMON = ("train.max_steps=3", "lora.dropout=0.1", "train.lr=0.01")


def _weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    folder = out / "tasks" / stage
    files = [folder / "adapter" / "adapter_model.safetensors", *sorted((folder / "model").glob("*.safetensors"))]
    return {k: v for f in files if f.is_file() for k, v in load_file(str(f)).items()}


def _same_stages(a: Path, b: Path, stages: tuple[str, ...]) -> None:
    for stage in stages:
        wa, wb = _weights(a, stage), _weights(b, stage)
        assert wa and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), stage
        assert (a / "tasks" / stage / "predictions.jsonl").read_text() == (
            b / "tasks" / stage / "predictions.jsonl"
        ).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["olora", "seqft", "replay_lora", "ewc_lora", "inflora"])
def test_a_run_grown_by_a_task_equals_the_run_made_at_once(tiny_dirs, tmp_path, method, monkeypatch):
    """[a, b] grown by c = [a, b, c] from scratch, bit for bit: matrix, weights, predictions; only c trains.
    Replay keeps its memory in the run folder: growing needs no earlier task's training data."""
    model = tiny_dirs["llama"]
    scratch = cli_run(model, tmp_path / "scratch", f"method={method}", *COMMON, tasks=THREE)
    cli_run(model, tmp_path / "grown", f"method={method}", *COMMON, tasks=TWO)
    trained = []
    real = olora.runner.train_task
    monkeypatch.setattr(olora.runner, "train_task", lambda *a, **k: trained.append(k["desc"]) or real(*a, **k))
    grown = cli_run(model, tmp_path / "grown", f"method={method}", *COMMON, tasks=THREE)
    assert len(trained) == 1 and "helpline" in trained[0]
    assert grown["matrix"] == scratch["matrix"] and grown["tasks"] == scratch["tasks"]
    _same_stages(tmp_path / "scratch", tmp_path / "grown", STAGES)
    if method == "replay_lora":
        state = load_file(str(tmp_path / "grown" / "tasks" / "1-newsdesk" / "state.safetensors"))
        assert {"replay.0.prompt", "replay.1.prompt"} <= state.keys()


def test_a_joint_method_retrains_when_the_run_grows_and_says_so(tiny_dirs, tmp_path, caplog):
    model = tiny_dirs["llama"]
    scratch = cli_run(model, tmp_path / "scratch", "method=mtl_lora", *COMMON, tasks=THREE)
    cli_run(model, tmp_path / "grown", "method=mtl_lora", *COMMON, tasks=TWO)
    caplog.clear()
    grown = cli_run(model, tmp_path / "grown", "method=mtl_lora", *COMMON, tasks=THREE)
    assert grown["matrix"] == scratch["matrix"]
    assert "task 0 (all)" in caplog.text and "training it again" in caplog.text and "its tasks" in caplog.text


def test_a_changed_setting_is_refused_and_with_force_retrains_from_where_it_matters(
    tiny_dirs, tmp_path, capsys, caplog
):
    model, out = tiny_dirs["llama"], tmp_path / "run"
    cli_run(model, out, *COMMON, tasks=TWO)
    capsys.readouterr()
    assert main(run_args(model, out, *COMMON, "train.lr=0.02", tasks=TWO)) == 2
    assert "different config (train.lr: 0.01 -> 0.02)" in capsys.readouterr().err
    caplog.clear()
    assert main([*run_args(model, out, *COMMON, "train.lr=0.02", tasks=TWO), "--force"]) == 0
    assert caplog.text.count("training it again") == 1 and "train.lr: 0.01 -> 0.02" in caplog.text
    fresh = cli_run(model, tmp_path / "fresh", *COMMON, "train.lr=0.02", tasks=TWO)
    assert json.loads((out / "results.json").read_text())["matrix"] == fresh["matrix"]
    _same_stages(out, tmp_path / "fresh", STAGES[:2])


def _yaml_run(path: Path, tasks: list, model: Path, out: Path) -> list[str]:
    """``olora run`` of a YAML file holding ``tasks`` (mappings of own tasks do not fit an override)."""
    path.write_text(yaml.safe_dump({"tasks": tasks}))
    return [path.as_posix(), *run_args(model, out, *COMMON)[1:]]


@pytest.mark.slow
def test_a_changed_data_file_retrains_its_task_and_every_later_one(tiny_dirs, tmp_path, caplog):
    """Same config, other data: the stage of the changed task (and every later stage) is trained again."""
    data = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "own_tasks", data)
    spec = {"name": "intents", "train": str(data / "intents.train.jsonl"), "test": str(data / "intents.test.jsonl"),
            "instruction": "Which team?", "input": "{message}", "target": "{intent}",
            "labels": ["refund", "delivery", "account"]}  # fmt: skip
    args = _yaml_run(tmp_path / "seq.yaml", ["sentiment", spec], tiny_dirs["llama"], tmp_path / "run")
    args = [a for a in args if not a.startswith("tasks=")]
    assert main(["run", *args]) == 0
    lines = (data / "intents.train.jsonl").read_text().splitlines()
    (data / "intents.train.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["run", *args]) == 0
    assert "task 0 (sentiment) already complete" in caplog.text
    assert "task 1 (intents)" in caplog.text and "task intents's data or definition" in caplog.text
    fresh = [a if not a.startswith("output_dir=") else f"output_dir={tmp_path / 'fresh'}" for a in args]
    assert main(["run", *fresh]) == 0
    _same_stages(tmp_path / "run", tmp_path / "fresh", ("0-sentiment", "1-intents"))
    results = [json.loads((tmp_path / f / "results.json").read_text()) for f in ("run", "fresh")]
    assert results[0]["matrix"] == results[1]["matrix"]


def test_an_export_grows_by_a_task_as_the_run_does(tiny_dirs, tmp_path):
    """start_from an exported adapter (the task adapters concatenated, stock PEFT): the new task trains
    against the exported lora_A rows, as extending the run trains against the per-task ones."""
    model = tiny_dirs["llama"]
    args = (*COMMON, "lora.dropout=0.0")
    cli_run(model, tmp_path / "run", *args, tasks=TWO)
    assert main(["export", str(tmp_path / "run"), "--format", "adapter", "-o", str(tmp_path / "exp")]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "grown")
    grown = cli_run(model, tmp_path / "grown", *args, tasks=THREE)
    from_export = cli_run(model, tmp_path / "next", *args, f"start_from={tmp_path / 'exp'}", tasks="[helpline]")
    assert from_export["tasks"] == grown["tasks"] and from_export["matrix"][:2] == grown["matrix"][:2]
    assert from_export["matrix"][2] == pytest.approx(grown["matrix"][2], abs=1e-6)
    a, b = adapter_weights(tmp_path / "grown", "2-helpline"), adapter_weights(tmp_path / "next", "2-helpline")
    assert a.keys() == b.keys()
    for key in a:  # one concatenated matmul vs one per task: float32 rounding, which Adam's steps carry on
        # (2.4e-6 on a 9e-3 weight on an AVX2 CPU, within 1e-6 on an AVX-512 one)
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
    assert not (tmp_path / "next" / "tasks" / "0-sentiment").exists()  # the past is the export, not retrained


@pytest.mark.parametrize(
    "extra, message",
    [
        (["method=seqlora"], "method=seqlora cannot start from an exported adapter"),
        (["method=inflora"], "does not carry the input basis"),
        (["tasks=[newsdesk]"], "already in start_from"),
    ],
)
def test_starting_from_an_export_is_refused_where_it_cannot_be_exact(tiny_dirs, tmp_path, capsys, extra, message):
    model = tiny_dirs["llama"]
    cli_run(model, tmp_path / "run", *COMMON, tasks=TWO)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "exp")]) == 0
    args = run_args(model, tmp_path / "next", *COMMON, f"start_from={tmp_path / 'exp'}", *extra, tasks="[helpline]")
    assert main(args) == 2 and message in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--format", "merged", "-o", str(tmp_path / "merged")]) == 0
    merged = run_args(model, tmp_path / "m", *COMMON, f"start_from={tmp_path / 'merged'}", tasks="[helpline]")
    assert main(merged) == 2 and "export the run with --format adapter" in capsys.readouterr().err


def test_the_task_list_change_is_named_briefly(tiny_dirs, tmp_path, capsys):
    model, out = tiny_dirs["llama"], tmp_path / "run"
    cli_run(model, out, *COMMON, tasks=THREE)
    capsys.readouterr()
    assert main(run_args(model, out, *COMMON, tasks="[sentiment,helpline]")) == 2
    err = capsys.readouterr().err
    assert "removed [newsdesk]" in err and len(err) < 400


@pytest.mark.parametrize("name", ["x/../../../PWNED", "../up", ".hidden", "a/b"])
def test_a_task_name_is_a_name_not_a_path(tiny_dirs, tmp_path, capsys, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"name": name, "train": "a.jsonl", "test": "b.jsonl"}
    args = _yaml_run(tmp_path / "seq.yaml", [spec], tiny_dirs["llama"], tmp_path / "deep" / "run")
    assert main(["run", *[a for a in args if not a.startswith("tasks=")]]) == 2
    assert "a task name becomes a folder name" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_configs_round_trip(tiny_dirs, data_dir, tmp_path, capsys, monkeypatch):
    """`olora run OUT/config.yaml` runs the saved config as it is (nothing retrained) and saves it unchanged;
    `olora config`'s output fed back gives the same output (a preset, a plain run, own tasks)."""
    model = tiny_dirs["llama"]
    own = Path(__file__).resolve().parents[1] / "examples" / "own_tasks" / "sequence.yaml"
    preset = [f"data.dir={data_dir}", "benchmark=proxy", "order=1", "data.train_per_class=1", "data.test_per_class=1"]
    cases = {
        "plain": run_args(model, tmp_path / "plain", *COMMON),
        "own": ["run", str(own), f"model={model}", "train.max_steps=1", "data.train_per_class=2",
                "data.test_per_class=1", f"output_dir={tmp_path / 'own'}"],
        "preset": ["run", f"model={model}", *preset, "train.max_steps=1", "data.max_source_length=240",
                   f"output_dir={tmp_path / 'preset'}"],
    }  # fmt: skip
    for name, args in cases.items():
        assert main(args) == 0, name
        saved = (tmp_path / name / "config.yaml").read_text()
        monkeypatch.setattr(olora.runner, "train_task", lambda *a, **k: pytest.fail("retrained"))
        assert main(["run", str(tmp_path / name / "config.yaml")]) == 0, name
        assert (tmp_path / name / "config.yaml").read_text() == saved
        monkeypatch.undo()
        capsys.readouterr()
        assert main(["config", *args[1:]]) == 0
        printed = capsys.readouterr().out
        (tmp_path / f"{name}.yaml").write_text(printed)
        assert main(["config", str(tmp_path / f"{name}.yaml")]) == 0
        assert capsys.readouterr().out == printed, name


def test_bad_inputs_are_one_line_errors(tiny_dirs, tmp_path, capsys):
    model = tiny_dirs["llama"]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "ok.jsonl").write_text('{"text": "hi", "label": "a"}\n')
    ok, empty = str(tmp_path / "ok.jsonl"), str(tmp_path / "empty.jsonl")
    brace = {"name": "t", "train": ok, "test": ok, "input": "{text"}
    args = _yaml_run(tmp_path / "a.yaml", [brace], model, tmp_path / "a")
    assert main(["run", *[a for a in args if not a.startswith("tasks=")]]) == 2
    assert "tasks[t].input='{text' is invalid: expected '}' before end of string" in capsys.readouterr().err
    args = _yaml_run(tmp_path / "b.yaml", [{"name": "t", "train": empty, "test": ok}], model, tmp_path / "b")
    assert main(["run", *[a for a in args if not a.startswith("tasks=")]]) == 2
    err = capsys.readouterr().err
    assert "tasks[t].train" in err and "empty.jsonl" in err and "is empty" in err and "Traceback" not in err
    cli_run(model, tmp_path / "run", *COMMON)
    for text in ("", "   "):
        assert main(["predict", str(tmp_path / "run"), "--text", text]) == 2
        assert "--text is empty" in capsys.readouterr().err


def test_an_exported_adapter_fits_vllm(tiny_dirs, tmp_path):
    """vLLM serves a LoRA adapter of rank ≤ --max-lora-rank (one of 8, 16, 32, 64, 128, 256, 320, 512) with no
    bias, DoRA or rsLoRA; the model card says how."""
    cli_run(tiny_dirs["llama"], tmp_path / "run", *COMMON, tasks=THREE)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "exp")]) == 0
    config = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert config["r"] == 8 * 3 and config["bias"] == "none"
    assert not config.get("use_dora") and not config.get("use_rslora")
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "--enable-lora" in card and "--max-lora-rank 32" in card


@pytest.mark.slow
def test_olora_add_grows_a_run_as_the_longer_command_does(tiny_dirs, tmp_path):
    from olora.api import grow

    model = tiny_dirs["llama"]
    longer = cli_run(model, tmp_path / "longer", *COMMON, tasks=THREE)
    cli_run(model, tmp_path / "added", *COMMON, tasks=TWO)
    assert main(["add", str(tmp_path / "added"), "helpline"]) == 0
    assert json.loads((tmp_path / "added" / "results.json").read_text())["matrix"] == longer["matrix"]
    cli_run(model, tmp_path / "api", *COMMON, tasks="[sentiment]")
    assert grow(tmp_path / "api", ["newsdesk", "helpline"])["matrix"] == longer["matrix"]


def test_a_setting_added_later_at_its_default_is_no_change(tmp_path):
    """A folder made before `quantize` and `data.test_per_task` existed matches a config that has them at their
    defaults (its cells stay in a bench table, its stages keep their fingerprints); any other value is a change."""
    from olora.config import config_to_dict, load_config
    from olora.store.rundir import RunFolder

    tree = config_to_dict(load_config(None, ["tasks=[sentiment]", f"output_dir={tmp_path}"]))
    old = {k: v for k, v in tree.items() if k != "quantize"}
    old["data"] = {k: v for k, v in tree["data"].items() if k not in ("train_per_task", "test_per_task")}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    folder = RunFolder(tmp_path)
    assert folder.config_changes(tree) == []
    changed = {**tree, "quantize": "4bit", "data": {**tree["data"], "test_per_task": 200}}
    assert folder.config_changes(changed) == ["data.test_per_task: None -> 200", "quantize: None -> '4bit'"]


def test_a_saved_auto_compares_as_what_the_run_resolved_it_to(tmp_path):
    """train.mixed_precision=auto is bf16 on a CPU with bf16 units and none on one without: a finished run saved
    with auto matches a config that pins the value it ran as (a bench cell made on either machine stays in the
    table) and differs, saying so, from one that pins the other; an unfinished run compares its saved text."""
    from olora.config import config_to_dict, load_config
    from olora.store.rundir import RunFolder

    tree = config_to_dict(load_config(None, ["tasks=[sentiment]", f"output_dir={tmp_path}"]))
    assert tree["train"]["mixed_precision"] == "auto"
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    pinned = lambda value: {**tree, "train": {**tree["train"], "mixed_precision": value}}  # noqa: E731
    folder = RunFolder(tmp_path)
    assert folder.config_changes(pinned("none")) == ["train.mixed_precision: 'auto' -> 'none'"]  # not finished
    for ran, other in (("none", "bf16"), ("bf16", "none")):
        resources = {"dtype": {"value": "float32", "reason": "."}, "mixed_precision": {"value": ran, "reason": "."}}
        (tmp_path / "results.json").write_text(json.dumps({"status": "complete", "resources": resources}))
        assert folder.config_changes(tree) == []
        assert folder.config_changes(pinned(ran)) == []
        assert folder.config_changes(pinned(other)) == [f"train.mixed_precision: 'auto' (ran as {ran!r}) -> {other!r}"]
