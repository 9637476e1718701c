"""End to end: the real CLI on tiny models, its outputs, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from conftest import run_args
from olora.cli import main
from olora.config import DataConfig
from olora.core.evaluate import generate_answers, label_token_budget
from olora.core.models import load_model
from olora.data.encoding import PromptEncoder
from olora.data.load import load_tasks


def _args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return run_args(model_dir, out, "data.test_per_class=3", "eval.batch_size=8", *extra)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_writes_a_complete_run(tiny_dirs, kind, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny_dirs[kind], out)) == 0
    assert "AA" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete" and res["method"] == "olora" and res["seed"] == 42
    assert res["tasks"] == ["sentiment", "newsdesk"]
    assert [len(r) for r in res["matrix"]] == [1, 2]
    assert res["aa"] == pytest.approx(sum(res["matrix"][1]) / 2)
    assert res["bwt"] == pytest.approx(res["matrix"][1][0] - res["matrix"][0][0])
    assert res["architecture"] == ("seq2seq" if kind == "t5" else "decoder-only")
    assert {"torch", "transformers", "peft", "accelerate"} <= set(res["versions"])
    assert len(res["timings"]) == 2 and res["config"]["lora"]["r"] == 8
    assert all(t["peak_rss_mb"] > 10 for t in res["timings"])
    assert (out / "config.yaml").is_file()

    t0, t1 = out / "tasks" / "0-sentiment", out / "tasks" / "1-newsdesk"
    assert len(_read_jsonl(t0 / "predictions.jsonl")) == 6  # 2 labels x 3
    preds = _read_jsonl(t1 / "predictions.jsonl")
    assert len(preds) == 6 + 12 and set(preds[0]) == {"task", "input", "gold", "prediction"}
    log = _read_jsonl(t1 / "train_log.jsonl")
    assert len(log) == 2 and log[0].get("orth", 0.0) > 0  # task 2 sees the orthogonality penalty
    assert _read_jsonl(t0 / "train_log.jsonl")[0].get("orth", 0.0) == 0.0

    # Plain peft loads both adapters and reproduces the run's final predictions.
    base, tok = load_model(str(tiny_dirs[kind]))
    model = PeftModel.from_pretrained(base, t0 / "adapter", adapter_name="a0")
    model.load_adapter(t1 / "adapter", adapter_name="a1")
    model.base_model.set_adapter(["a0", "a1"])
    tasks = load_tasks(["sentiment", "newsdesk"], DataConfig(train_per_class=4, test_per_class=3), 42)
    seq2seq = kind == "t5"
    enc = PromptEncoder(tok, seq2seq, 512).encode(tasks[1], tasks[1].test)
    again = generate_answers(
        model,
        tok,
        enc,
        seq2seq=seq2seq,
        batch_size=8,
        max_new_tokens=label_token_budget(tok, tasks[1].labels),
    )
    assert again == [p["prediction"] for p in preds if p["task"] == "newsdesk"]


def test_seqlora_trains_one_adapter_through_the_sequence(tiny_dirs, tmp_path):
    out = tmp_path / "seq"
    assert main(_args(tiny_dirs["llama"], out, "method=seqlora")) == 0
    cfgs = [
        json.loads((out / "tasks" / d / "adapter" / "adapter_config.json").read_text())
        for d in ("0-sentiment", "1-newsdesk")
    ]
    assert all(c["r"] == 8 for c in cfgs)
    w0 = (out / "tasks" / "0-sentiment" / "adapter" / "adapter_model.safetensors").read_bytes()
    w1 = (out / "tasks" / "1-newsdesk" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert w0 != w1  # the same adapter, trained further
    assert all(r.get("orth", 0.0) == 0.0 for r in _read_jsonl(out / "tasks" / "1-newsdesk" / "train_log.jsonl"))


def test_bf16_autocast_trains_float32_adapters_with_close_losses(tiny_dirs, tmp_path):
    from safetensors.torch import load_file

    runs = {}
    for precision in ("none", "bf16"):
        out = tmp_path / precision
        assert main(_args(tiny_dirs["llama"], out, f"train.mixed_precision={precision}")) == 0
        runs[precision] = _read_jsonl(out / "tasks" / "0-sentiment" / "train_log.jsonl")
        weights = load_file(out / "tasks" / "0-sentiment" / "adapter" / "adapter_model.safetensors")
        assert {w.dtype for w in weights.values()} == {torch.float32}
    first = [runs[p][0]["nll"] for p in ("none", "bf16")]
    assert first[0] != first[1]  # autocast really ran in bfloat16
    assert first[1] == pytest.approx(first[0], rel=0.05)


def test_rerun_resumes_and_changed_config_is_refused(tiny_dirs, tmp_path, capsys, monkeypatch):
    import olora.runner

    out = tmp_path / "run"
    assert main(_args(tiny_dirs["llama"], out)) == 0
    first = json.loads((out / "results.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(olora.runner, "train_task", no_training)
    assert main(_args(tiny_dirs["llama"], out)) == 0  # not retrained: training would raise
    assert json.loads((out / "results.json").read_text())["matrix"] == first["matrix"]
    capsys.readouterr()
    assert main(_args(tiny_dirs["llama"], out, "train.lr=0.5")) == 2
    assert "different config (train.lr: 0.001 -> 0.5)" in capsys.readouterr().err


def test_real_benchmark_tasks_run(tiny_dirs, data_dir, tmp_path):
    out = tmp_path / "bench"
    args = _args(tiny_dirs["llama"], out, f"data.dir={data_dir}", "tasks=[agnews,amazon]", "data.max_source_length=100")
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == ["agnews", "amazon"] and res["task_types"] == ["TC", "SC"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["tasks=[sentiment,newsdesx]"], "task 'newsdesx' is not a built-in task"),
        (["data.dir=/nonexistent/CL", "tasks=[agnews]"], "is not a folder"),
        (["model=/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
        (["lora.r=0"], "lora.r=0 is invalid"),
        (["lora.target_modules=[nothing_here]"], "cannot add LoRA adapters"),
        (["data.train_per_class=1000"], "larger than the biggest class"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_results(tiny_dirs, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(_args(tiny_dirs["llama"], out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("olora: error:") and len(err.splitlines()) == 1
    assert not (out / "results.json").exists()


def test_output_dir_that_is_a_file(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(_args(tiny_dirs["llama"], out)) == 2
    assert "is a file" in capsys.readouterr().err


def test_diverging_loss_stops_the_task_without_saving_it(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "nan"
    assert (
        main(
            _args(
                tiny_dirs["llama"],
                out,
                "train.lr=1e30",
                "train.max_grad_norm=0",
                "train.max_steps=6",
                "data.train_per_class=12",
            )
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "sentiment" in err and "at step" in err
    assert not (out / "results.json").exists()
    assert not (out / "tasks" / "0-sentiment" / "task.json").exists()
    assert json.loads((out / "progress.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "olora", "run", "lora.rank=4"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "olora: error: unknown config key 'lora.rank': did you mean lora.r?"


def test_unsupported_architecture_is_rejected(tmp_path, capsys):
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
        tmp_path / "vit"
    )
    assert main(["run", f"model={tmp_path / 'vit'}", f"output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'vit', which is not a supported architecture" in err and len(err.strip().splitlines()) == 1


def test_output_dir_that_cannot_be_created(tiny_dirs, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(_args(tiny_dirs["llama"], tmp_path / "file" / "sub")) == 2
    assert "is not writable" in capsys.readouterr().err


def test_model_without_config_is_rejected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", f"model={tmp_path / 'empty'}", f"output_dir={tmp_path / 'o'}"]) == 2
    assert "has no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_both_methods_over_seeds_and_prints_the_paired_difference(tiny_dirs, tmp_path, capsys):
    args = [
        "demo",
        f"model={tiny_dirs['llama']}",
        "train.max_steps=1",
        "data.train_per_class=2",
        "tasks=[sentiment,newsdesk]",
    ]
    args += ["data.test_per_class=1", "--seeds", "1", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "olora (2 seeds)" in out and "seqlora (2 seeds)" in out and "olora − seqlora" in out
    assert "sentiment at the end" in out and "95 % t-interval" in out
    assert all((tmp_path / m / f"seed{s}" / "results.json").is_file() for m in ("olora", "seqlora") for s in (1, 2))
