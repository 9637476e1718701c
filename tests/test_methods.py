"""Each baseline's defining behaviour, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_run
from olora.cli import main
from olora.data.encoding import Encoded
from olora.methods import METHODS
from olora.methods.baselines import EWCPenalty, distillation_kl, replay_memory


def _run(model_dir: Path, out: Path, method: str, *extra: str) -> dict:
    return cli_run(model_dir, out, f"method={method}", *extra)


def _log(out: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (out / "tasks" / stage / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_end_to_end(tiny_dirs, tmp_path, method):
    res = _run(tiny_dirs["llama"], tmp_path / method, method)
    assert res["method"] == method and [len(r) for r in res["matrix"]] == [1, 2]
    assert res["aa"] == pytest.approx(sum(res["matrix"][-1]) / 2)


def test_replay_memory_is_bounded_per_task_and_seeded():
    past = [[Encoded([1], [i]) for i in range(10)], [Encoded([3], [i]) for i in range(2)]]
    memory = replay_memory(past, per_task=4, seeds=[1, 2])
    assert len(memory) == 4 + 2  # at most 4 of each past task; the second has only 2
    assert all(any(ex is p for p in past[0]) for ex in memory[:4]) and memory[4:] == past[1]
    assert replay_memory(past, 4, [1, 2]) == memory
    assert replay_memory(past, 4, [7, 2])[:4] != memory[:4]  # the memory is the task seed's sample


@pytest.mark.parametrize("method", ["replay_lora", "replay_ft"])
def test_replay_mixes_its_memory_into_later_tasks(tiny_dirs, tmp_path, method):
    out = tmp_path / method
    _run(tiny_dirs["llama"], out, method, "replay.per_task=3")
    second = json.loads((out / "tasks" / "1-newsdesk" / "task.json").read_text())
    assert second["timings"]["n_train"] == 16 + 3  # 16 newsdesk examples + 3 remembered sentiment ones


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    layer = torch.nn.Linear(3, 2)
    ewc = EWCPenalty()
    ewc.bind(layer)
    assert ewc().item() == 0.0  # no task consolidated yet
    examples = [Encoded([1], [2])] * 4

    def nll(model, batch):
        return model(torch.ones(3)).pow(2).sum()

    ewc.consolidate(layer, examples, seq2seq=False, pad_id=0, nll=nll, device=torch.device("cpu"))
    assert ewc().item() == 0.0
    assert all((f >= 0).all() for f in ewc.fisher.values()) and any(f.sum() > 0 for f in ewc.fisher.values())
    with torch.no_grad():
        layer.weight.add_(0.5)
    assert ewc().item() > 0


def test_ewc_fisher_is_per_example_not_per_batch():
    """F = mean_x g(x)²: for two examples with opposite gradients, the batch-mean gradient is 0 but F is not."""
    layer = torch.nn.Linear(1, 1, bias=False)
    examples = [Encoded([1], [1]), Encoded([1], [2])]

    def nll(model, batch):  # gradient ±1 by example
        sign = 1.0 if batch["labels"].flatten()[-1] == 1 else -1.0
        return sign * model.weight.sum()

    ewc = EWCPenalty()
    ewc.consolidate(layer, examples, seq2seq=False, pad_id=0, nll=nll, device=torch.device("cpu"))
    assert ewc.fisher["weight"].item() == pytest.approx(1.0)


def test_ewc_moves_every_batch_to_the_model_device(monkeypatch):
    """The Fisher pass must feed tensors on the run's device (it fed CPU tensors to a GPU model)."""
    import olora.methods.baselines as methods

    seen = []

    def nll(model, batch):
        seen.extend(t.device for t in batch.values())
        return model.weight.sum()

    moved = []
    real_to = torch.Tensor.to

    def spy_to(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, "cpu")

    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    layer = torch.nn.Linear(1, 1, bias=False)
    methods.EWCPenalty().consolidate(
        layer, [Encoded([1], [1])], seq2seq=False, pad_id=0, nll=nll, device=torch.device("meta")
    )
    assert moved and all(d == torch.device("meta") for d in moved)
    assert len(seen) == len(moved)  # every tensor the Fisher pass fed the model was moved to its device


@pytest.mark.parametrize("method", ["ewc_lora", "ewc_ft"])
def test_ewc_run_logs_its_penalty(tiny_dirs, tmp_path, method):
    out = tmp_path / method
    _run(tiny_dirs["llama"], out, method)
    assert "ewc" in _log(out, "1-newsdesk")[0] and (out / "tasks" / "0-sentiment" / "state.safetensors").is_file()


def test_lwf_distillation_is_zero_for_identical_outputs():
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[1, 2, -100], [3, -100, -100]])
    assert distillation_kl(logits, logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, torch.randn(2, 3, 7), target).item() > 0


@pytest.mark.parametrize("method", ["lwf_lora", "lwf_ft"])
def test_lwf_run_distils_from_the_model_before_the_task(tiny_dirs, tmp_path, method):
    out = tmp_path / method
    _run(tiny_dirs["llama"], out, method)
    log = _log(out, "1-newsdesk")
    assert "lwf" in log[0] and log[0]["lwf"] == pytest.approx(0.0, abs=1e-6)  # teacher == student at step 1
    assert log[-1]["lwf"] > 0


def test_pertask_routes_by_task_id(tiny_dirs, tmp_path):
    res = _run(tiny_dirs["llama"], tmp_path / "pt", "pertask_lora")
    assert res["matrix"][1][0] == res["matrix"][0][0] and res["bwt"] == 0.0
    cfg = json.loads((tmp_path / "pt" / "tasks" / "1-newsdesk" / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8


def test_pertask_ft_starts_every_task_from_the_base_model(tiny_dirs, tmp_path):
    """Task 2's model does not depend on what task 1 was: each task trains a fresh copy of the base."""
    from safetensors.torch import load_file

    _run(tiny_dirs["llama"], tmp_path / "a", "pertask_ft")
    _run(tiny_dirs["llama"], tmp_path / "b", "pertask_ft", "tasks=[helpline,newsdesk]")
    _run(tiny_dirs["llama"], tmp_path / "seq", "seqft")
    a, b, seq = (
        load_file(str(tmp_path / run / "tasks" / "1-newsdesk" / "model" / "model.safetensors"))
        for run in ("a", "b", "seq")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], seq[k]) for k in a)  # seqft continues from task 1's weights


@pytest.mark.parametrize("method", ["mtl_lora", "mtl_ft"])
def test_mtl_trains_once_on_all_tasks(tiny_dirs, tmp_path, method):
    out = tmp_path / method
    res = _run(tiny_dirs["llama"], out, method)
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
    folded = _run(tiny_dirs["llama"], tmp_path / mode, "olora", *args, f"past.fold={mode}")
    unfolded = _run(tiny_dirs["llama"], tmp_path / "none", "olora", *args, "past.fold=none")
    assert folded["matrix"] == unfolded["matrix"]
    for stage in ("1-newsdesk", "2-helpline"):
        a = load_file(str(tmp_path / mode / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "none" / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


def test_unknown_method_names_the_nearest_one(tiny_dirs, tmp_path, capsys):
    from olora.errors import OloraError
    from olora.methods import get_method

    with pytest.raises(OloraError, match="did you mean 'olora'?"):
        get_method("olra")
    args = ["run", f"model={tiny_dirs['llama']}", "method=olra", f"output_dir={tmp_path / 'x'}"]
    assert main(args) == 2 and "did you mean 'olora'?" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_new_method_is_one_registered_class(tiny_dirs, tmp_path, capsys):
    """A toy method (SeqLoRA that also trains on the last ``toy.previous`` tasks' data), with its own option
    section, needs no change elsewhere: it runs, its option is parsed and validated, `olora config` shows it."""
    from dataclasses import dataclass, field

    from olora.config import OPTION_SECTIONS, check, register_options
    from olora.methods import METHODS, register
    from olora.methods.units import OneAdapter

    @register_options("toy")
    @dataclass
    class ToyOptions:
        previous: int = field(default=1, metadata={"help": "How many earlier tasks to rehearse."})

        def problems(self, prefix):
            errors = []
            check(errors, self.previous >= 0, f"{prefix}previous", self.previous, "must be >= 0")
            return errors

    @register("toy_rehearsal")
    class ToyRehearsal(OneAdapter):
        """Toy: SeqLoRA that rehearses the previous tasks."""

        sections = ("toy",)

        def training_data(self, ctx, stage):
            first = max(stage.index - self.toy.previous, 0)
            previous = [ctx.train_sets[t.name] for t in ctx.tasks[first : stage.index]]
            return super().training_data(ctx, stage) + [ex for examples in previous for ex in examples]

    try:
        _run(tiny_dirs["llama"], tmp_path / "toy", "toy_rehearsal")
        second = json.loads((tmp_path / "toy" / "tasks" / "1-newsdesk" / "task.json").read_text())
        assert second["timings"]["n_train"] == 16 + 8
        _run(tiny_dirs["llama"], tmp_path / "toy0", "toy_rehearsal", "toy.previous=0")
        second = json.loads((tmp_path / "toy0" / "tasks" / "1-newsdesk" / "task.json").read_text())
        assert second["timings"]["n_train"] == 16
        assert main(["config", "method=toy_rehearsal", "toy.previous=-1"]) == 2
        assert "toy.previous=-1 is invalid: must be >= 0" in capsys.readouterr().err
        assert main(["config", "method=toy_rehearsal", "toy.previous=2"]) == 0
        assert "toy:\n  previous: 2" in capsys.readouterr().out
    finally:
        METHODS.pop("toy_rehearsal")
        OPTION_SECTIONS.pop("toy")


def test_methods_command_lists_every_method_and_its_options(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")}
    assert listed == set(METHODS)
    assert "inflora.threshold = 0.97" in out and "past.fold = 'merge'" in out and "(full fine-tuning)" in out
    assert "olora tune tries olora.lambda_orth × 0.1, 1, 10 of the configured value" in out
    assert "olora tune tries inflora.threshold 0.9, 0.97, 0.995" in out
