"""``quantize=4bit``: the base model's linear weights in bitsandbytes NF4 (QLoRA), adapters trained as usual.

The configuration checks and the export refusal run everywhere; the end-to-end run needs bitsandbytes
(``pip install 'olora[quantize]'``; its CPU backend runs 4-bit layers on these machines) and is long.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import adapter_weights, cli_run, long_test, run_args
from olora.cli import main

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_quantize_value_is_one_line(tiny_dirs, tmp_path, capsys):
    assert main(run_args(tiny_dirs["llama"], tmp_path / "run", "quantize=8bit")) == 2
    line = _error_line(capsys)
    assert "quantize" in line and "none, 4bit" in line


def test_a_4bit_base_refuses_full_fine_tuning(tiny_dirs, tmp_path, capsys):
    assert main(run_args(tiny_dirs["llama"], tmp_path / "run", "quantize=4bit", "method=replay_ft")) == 2
    line = _error_line(capsys)
    assert "quantize=4bit" in line and "replay_ft trains the whole model" in line
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_merged_export_of_a_4bit_run_refuses_and_offers_the_adapter(tiny_dirs, tmp_path, capsys):
    """The refusal reads the run's config, so it is checked on a float run marked as a 4-bit one."""
    run = tmp_path / "run"
    cli_run(tiny_dirs["llama"], run, tasks="[sentiment]")
    results = json.loads((run / "results.json").read_text())
    results["config"]["quantize"] = "4bit"
    (run / "results.json").write_text(json.dumps(results))
    capsys.readouterr()
    assert main(["export", str(run), "--format", "merged", "-o", str(tmp_path / "merged")]) == 2
    line = _error_line(capsys)
    assert "4-bit" in line and "--format adapter" in line
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
@long_test
@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install 'olora[quantize]')")
def test_a_4bit_base_trains_adapters_and_exports_the_adapter(tiny_dirs, tmp_path, capsys):
    import torch
    from bitsandbytes.nn import Linear4bit

    from olora.core.models import load_model

    model, _ = load_model(str(tiny_dirs["llama"]), "float32", "4bit")
    assert any(isinstance(m, Linear4bit) for m in model.modules())
    run = tmp_path / "run"
    results = cli_run(tiny_dirs["llama"], run, "quantize=4bit", "train.lr=0.05", "data.test_per_class=1")
    assert results["resources"]["fold_past"]["value"] == "stack"  # merging into 4-bit weights is impossible
    for stage in ("0-sentiment", "1-newsdesk"):
        weights = adapter_weights(run, stage)
        assert any("lora_B" in k and torch.count_nonzero(v) for k, v in weights.items())  # it trained
    assert main(["export", str(run), "--format", "adapter", "-o", str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
