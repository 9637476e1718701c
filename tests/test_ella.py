"""ELLA's defining behaviour: λ·‖ΔW_t ⊙ W_past‖² against the sum of past updates, element by element."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_run, train_log
from olora.config import LoRAConfig
from olora.core.adapters import add_adapter, lora_layers, peft_lora_config
from olora.methods.ella import OverlapPenalty


def test_penalty_is_the_elementwise_overlap_with_the_sum_of_past_updates(tiny):
    model, _, seq2seq = tiny
    for name in ("t0", "t1", "t2"):
        model = add_adapter(model, name, peft_lora_config(LoRAConfig(), model, seq2seq))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model):
            for name in ("t0", "t1", "t2"):
                layer.lora_B[name].weight.normal_()
    expected = 0.0
    for layer in lora_layers(model):
        delta = {n: layer.scaling[n] * layer.lora_B[n].weight @ layer.lora_A[n].weight for n in ("t0", "t1", "t2")}
        expected += ((delta["t0"] + delta["t1"]) * delta["t2"]).pow(2).sum().item()
    assert OverlapPenalty(model, ["t0", "t1"], "t2")().item() == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_B["t0"].weight.zero_()
            layer.lora_B["t1"].weight.zero_()
    assert OverlapPenalty(model, ["t0", "t1"], "t2")().item() == 0.0  # no past update: nothing to avoid


def _overlap(out) -> float:
    """Σ_layers ‖ΔW_1 ⊙ ΔW_0‖² from the saved adapters."""
    a, b = (
        load_file(str(out / "tasks" / s / "adapter" / "adapter_model.safetensors"))
        for s in ("0-sentiment", "1-newsdesk")
    )
    total = 0.0
    for key in a:
        if key.endswith("lora_A.weight"):
            bkey = key.replace("lora_A", "lora_B")
            total += ((a[bkey] @ a[key]) * (b[bkey] @ b[key])).pow(2).sum().item()
    return total


def test_a_larger_weight_leaves_less_overlap_with_the_past(tiny_dirs, tmp_path):
    args = ["method=ella", "lora.dropout=0.0", "train.lr=0.05", "train.max_steps=4"]
    free = cli_run(tiny_dirs["llama"], tmp_path / "free", *args, "ella.weight=0")
    held = cli_run(tiny_dirs["llama"], tmp_path / "held", *args, "ella.weight=1e9")
    assert free["matrix"] and held["matrix"]
    assert _overlap(tmp_path / "held") < 0.5 * _overlap(tmp_path / "free")
    log = train_log(tmp_path / "held", "1-newsdesk")
    assert log[0]["ella"] == 0 and log[-1]["ella"] > 0  # the new B starts at zero: no overlap at step 1
    first = (tmp_path / "held" / "tasks" / "0-sentiment" / "train_log.jsonl").read_text()
    assert "ella" not in first  # the first task has no past to avoid
