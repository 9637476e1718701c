"""Each baseline's defining behaviour, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from olora.cli import main
from olora.encoding import Encoded
from olora.methods import METHODS, EWCPenalty, distillation_kl, replay_sample


def _run(model_dir: Path, out: Path, method: str, *extra: str) -> dict:
    args = [
        "run",
        f"model={model_dir}",
        "tasks=[sentiment,newsdesk]",
        "train.max_steps=2",
        "train.batch_size=4",
        "data.train_per_class=4",
        "data.test_per_class=2",
        "train.log_every=1",
        f"method={method}",
        f"output_dir={out}",
        *extra,
    ]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


def _log(out: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (out / "tasks" / stage / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_end_to_end(tiny_dirs, tmp_path, method):
    res = _run(tiny_dirs["llama"], tmp_path / method, method)
    assert res["method"] == method and [len(r) for r in res["matrix"]] == [1, 2]
    assert res["aa"] == pytest.approx(sum(res["matrix"][-1]) / 2)


def test_replay_mixes_past_examples(tiny_dirs, tmp_path):
    past = [[Encoded([1], [2]) for _ in range(10)], [Encoded([3], [4]) for _ in range(10)]]
    sample = replay_sample(past, n_current=20, ratio=0.25, seed=0)
    assert len(sample) == 5 and all(any(ex is p for p in past[0] + past[1]) for ex in sample)
    assert replay_sample(past, 20, 0.25, 0) == sample
    out = tmp_path / "replay"
    _run(tiny_dirs["llama"], out, "replay", "baselines.replay_ratio=0.5")
    second = json.loads((out / "tasks" / "1-newsdesk" / "task.json").read_text())
    assert second["timings"]["n_train"] == 16 + 8  # 16 newsdesk examples + 50 % replayed sentiment


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    layer = torch.nn.Linear(3, 2)
    ewc = EWCPenalty()
    ewc.bind(layer)
    assert ewc().item() == 0.0  # no task consolidated yet
    examples = [Encoded([1], [2])] * 4

    def nll(model, batch):
        return model(torch.ones(3)).pow(2).sum()

    ewc.consolidate(layer, examples, seq2seq=False, pad_id=0, nll=nll)
    assert ewc().item() == 0.0
    assert all((f >= 0).all() for f in ewc.fisher.values()) and any(f.sum() > 0 for f in ewc.fisher.values())
    with torch.no_grad():
        layer.weight.add_(0.5)
    assert ewc().item() > 0


def test_ewc_run_logs_its_penalty(tiny_dirs, tmp_path):
    out = tmp_path / "ewc"
    _run(tiny_dirs["llama"], out, "ewc")
    assert "ewc" in _log(out, "1-newsdesk")[0] and (out / "tasks" / "0-sentiment" / "ewc.safetensors").is_file()


def test_lwf_distillation_is_zero_for_identical_outputs():
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[1, 2, -100], [3, -100, -100]])
    assert distillation_kl(logits, logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, torch.randn(2, 3, 7), target).item() > 0


def test_lwf_run_distils_from_the_previous_adapter(tiny_dirs, tmp_path):
    out = tmp_path / "lwf"
    _run(tiny_dirs["llama"], out, "lwf")
    log = _log(out, "1-newsdesk")
    assert "lwf" in log[0] and log[0]["lwf"] == pytest.approx(0.0, abs=1e-6)  # teacher == student at step 1
    assert log[-1]["lwf"] > 0


def test_pertask_routes_by_task_id(tiny_dirs, tmp_path):
    res = _run(tiny_dirs["llama"], tmp_path / "pt", "pertask")
    assert res["matrix"][1][0] == res["matrix"][0][0] and res["bwt"] == 0.0
    cfg = json.loads((tmp_path / "pt" / "tasks" / "1-newsdesk" / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8


def test_mtl_trains_once_on_all_tasks(tiny_dirs, tmp_path):
    out = tmp_path / "mtl"
    res = _run(tiny_dirs["llama"], out, "mtl")
    stage = json.loads((out / "tasks" / "0-all" / "task.json").read_text())
    assert stage["timings"]["n_train"] == 8 + 16 and len(stage["tasks"]) == 2
    assert res["matrix"][0] == res["matrix"][1][:1] and res["bwt"] == 0.0 and res["forgetting"] == 0.0


def test_seqft_trains_the_base_weights(tiny_dirs, tmp_path):
    out = tmp_path / "seqft"
    _run(tiny_dirs["llama"], out, "seqft")
    from safetensors.torch import load_file

    before = load_file(str(tiny_dirs["llama"] / "model.safetensors"))
    after = load_file(str(out / "tasks" / "0-sentiment" / "model" / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("self_attn" in k for k in changed) and any("mlp" in k for k in changed)


def test_inclora_has_no_orthogonality_but_olora_does(tiny_dirs, tmp_path):
    _run(tiny_dirs["llama"], tmp_path / "inc", "inclora")
    _run(tiny_dirs["llama"], tmp_path / "o", "olora")
    assert "orth" not in _log(tmp_path / "inc", "1-newsdesk")[0]
    assert _log(tmp_path / "o", "1-newsdesk")[0]["orth"] > 0


@pytest.mark.parametrize("mode", ["merge", "stack"])
def test_folding_past_adapters_changes_no_result(tiny_dirs, tmp_path, mode):
    """Past adapters merged into the base or stacked into one: same matrix, same adapters as t separate."""
    from safetensors.torch import load_file

    args = ["tasks=[sentiment,newsdesk,helpline]", "lora.dropout=0.0", "train.lr=0.01"]
    folded = _run(tiny_dirs["llama"], tmp_path / mode, "olora", *args, f"olora.fold_past={mode}")
    unfolded = _run(tiny_dirs["llama"], tmp_path / "none", "olora", *args, "olora.fold_past=none")
    assert folded["matrix"] == unfolded["matrix"]
    for stage in ("1-newsdesk", "2-helpline"):
        a = load_file(str(tmp_path / mode / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "none" / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
