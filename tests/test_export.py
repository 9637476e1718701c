"""Export to one PEFT adapter or a merged checkpoint, and predict from either: same outputs as the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from conftest import cli_run
from olora.cli import main
from olora.tools.export import export_run
from olora.tools.predict import load_for_inference


@pytest.fixture
def finished_run(tiny_dirs, kind, tmp_path) -> Path:
    out = tmp_path / "run"
    cli_run(tiny_dirs[kind], out, "train.lr=0.05", tasks="[sentiment,newsdesk,helpline]")
    return out


def _logits(model, tok, seq2seq):
    batch = tok(
        ["Task:SC\nDataset:sentiment\nText: great\nAnswer:", "Text: the striker scored\nAnswer:"],
        return_tensors="pt",
        padding=True,
    )
    if seq2seq:
        batch["decoder_input_ids"] = torch.zeros((2, 3), dtype=torch.long)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_exported_adapter_and_merged_model_equal_all_adapters_active(finished_run, tiny_dirs, kind, tmp_path):
    seq2seq = kind == "t5"
    model, tok, _, _ = load_for_inference(finished_run, "sentiment")  # all three task adapters active
    expected = _logits(model, tok, seq2seq)

    adapter_dir = export_run(finished_run, "adapter", tmp_path / "adapter")
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 24 and cfg["lora_alpha"] == 24
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    plain = PeftModel.from_pretrained(auto.from_pretrained(tiny_dirs[kind]), adapter_dir)  # stock peft
    torch.testing.assert_close(_logits(plain, tok, seq2seq), expected, rtol=1e-4, atol=1e-5)

    merged_dir = export_run(finished_run, "merged", tmp_path / "merged")
    merged = auto.from_pretrained(merged_dir)  # no peft involved
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(_logits(merged, tok, seq2seq), expected, rtol=1e-4, atol=1e-5)
    base = auto.from_pretrained(tiny_dirs[kind])
    assert not torch.allclose(_logits(base, tok, seq2seq), expected)


def test_predict_on_export_matches_the_runs_predictions(finished_run, tmp_path, capsys):
    export_run(finished_run, "adapter", tmp_path / "adapter")
    rows = [
        json.loads(x) for x in (finished_run / "tasks" / "2-helpline" / "predictions.jsonl").read_text().splitlines()
    ]
    rows = [r for r in rows if r["task"] == "newsdesk"]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"input": r["input"]}) + "\n" for r in rows))
    for source in (tmp_path / "adapter", finished_run):
        out = tmp_path / f"pred-{source.name}.jsonl"
        assert main(["predict", str(source), "--task", "newsdesk", "--file", str(inputs), "-o", str(out)]) == 0
        got = [json.loads(x)["prediction"] for x in out.read_text().splitlines()]
        assert got == [r["prediction"] for r in rows]
    capsys.readouterr()
    assert main(["predict", str(finished_run), "--task", "newsdesk", "--text", rows[0]["input"]]) == 0
    assert capsys.readouterr().out == rows[0]["prediction"] + "\n"


def test_export_and_predict_errors(finished_run, tmp_path, capsys):
    assert main(["predict", str(finished_run), "--task", "nope", "--text", "x"]) == 2
    assert "choose one of sentiment, newsdesk, helpline" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
