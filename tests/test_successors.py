"""The methods that came after O-LoRA (N-LoRA, PEFT's OSF) and olora's plasticity options: each one's
defining behaviour on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.osf.layer import OSFLayer
from safetensors.torch import load_file

from conftest import cli_run
from olora.config import RunConfig
from olora.core.adapters import OrthogonalityPenalty, add_adapter, complement_init, lora_layers, update_l1
from olora.core.context import RunContext
from olora.data.tasks import Task
from olora.methods import Stage, get_method


def _update_l1(adapter_dir: Path) -> float:
    """Σ_layers ‖B·A‖_1 from a saved adapter file."""
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    total = 0.0
    for key, a in weights.items():
        if "lora_A" in key:
            total += (weights[key.replace("lora_A", "lora_B")] @ a).abs().sum().item()
    return total


def test_nlora_penalty_is_the_l1_norm_of_the_scaled_update(tiny):
    model, _, seq2seq = tiny
    cfg = RunConfig()
    from olora.core.adapters import peft_lora_config

    model = add_adapter(model, "t0", peft_lora_config(cfg.lora, model, seq2seq))
    layers = lora_layers(model)
    for layer in layers:
        torch.nn.init.normal_(layer.lora_B["t0"].weight)
    by_hand = sum(
        (layer.scaling["t0"] * layer.lora_B["t0"].weight @ layer.lora_A["t0"].weight).abs().sum() for layer in layers
    )
    assert update_l1(model, "t0").item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_nlora_sparsity_weight_shrinks_the_update(tiny_dirs, tmp_path):
    """The same run with λ = 0 (IncLoRA) and a large λ: the l1 term keeps the second task's update smaller,
    and the first task's adapter is frozen while the second trains (saved bytes unchanged)."""
    extra = ("train.max_steps=4", "train.lr=0.01")
    runs = {lam: tmp_path / f"l{lam}" for lam in (0, 1)}
    for lam, out in runs.items():
        cli_run(tiny_dirs["llama"], out, "method=nlora", f"nlora.weight={lam}", *extra)
    second = {lam: _update_l1(out / "tasks" / "1-newsdesk" / "adapter") for lam, out in runs.items()}
    assert second[1] < 0.5 * second[0]
    inc = tmp_path / "inclora"
    cli_run(tiny_dirs["llama"], inc, "method=inclora", *extra)
    assert _update_l1(inc / "tasks" / "1-newsdesk" / "adapter") == pytest.approx(second[0], rel=1e-5)


def _osf_context(model, seq2seq: bool, n_tasks: int = 2) -> RunContext:
    from accelerate import Accelerator

    tasks = [Task(f"t{i}", "x", ["a", "b"]) for i in range(n_tasks)]
    cfg = RunConfig()
    return RunContext(cfg, model, None, Accelerator(cpu=True), seq2seq, tasks, {}, {}, cfg.train, base_path="tiny")


def _loss(model, tokenizer, seq2seq: bool) -> torch.Tensor:
    ids = tokenizer(["the cat sat on the mat", "a dog ran far away"], return_tensors="pt", padding=True)
    if seq2seq:
        return model(**ids, labels=ids["input_ids"]).loss
    return model(**ids, labels=ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)).loss


def test_osf_trains_only_off_the_preserved_singular_directions(tiny):
    """Stage 2 of 2 preserves half of each target matrix's spectrum: the gradient reaching U_low has no
    component along the top singular vectors U_high, and re-wrapping is the identity (ΔW = 0 at init)."""
    model, tokenizer, seq2seq = tiny
    model.eval()
    with torch.no_grad():
        before = _loss(model, tokenizer, seq2seq).item()
    method, ctx = get_method("osf"), _osf_context(model, seq2seq)
    stage = Stage(1, "t1", [ctx.tasks[1]], ctx.tasks)
    method.begin_training(ctx, stage)
    ctx.model.eval()
    loss = _loss(ctx.model, tokenizer, seq2seq)
    assert loss.item() == pytest.approx(before, rel=1e-5)
    loss.backward()
    layers = [m for m in ctx.model.modules() if isinstance(m, OSFLayer)]
    assert layers
    for layer in layers:
        weight = layer.get_base_layer().weight.detach()
        k = layer.effective_rank["default"]
        assert k == max(1, int(0.5 * min(weight.shape)))
        u, _, vt = torch.linalg.svd(weight, full_matrices=False)
        params = layer.osf_svd_params["default"]
        grad_u, grad_v = params["U_low"].grad, params["V_low"].grad
        assert grad_u.abs().max() > 0
        assert (u[:, :k].T @ grad_u).abs().max() <= 1e-5 * grad_u.abs().max()
        assert (grad_v @ vt[:k].T).abs().max() <= 1e-5 * grad_v.abs().max()


def test_osf_merges_each_stage_into_the_weights(tiny):
    """After a stage the wrapper is gone and the plain model computes what the trained wrapper computed."""
    model, tokenizer, seq2seq = tiny
    model.eval()
    with torch.no_grad():
        untrained = _loss(model, tokenizer, seq2seq).item()
    method, ctx = get_method("osf"), _osf_context(model, seq2seq)
    stage = Stage(0, "t0", [ctx.tasks[0]], ctx.tasks[:1])
    method.begin_training(ctx, stage)
    with torch.no_grad():
        for layer in (m for m in ctx.model.modules() if isinstance(m, OSFLayer)):
            layer.osf_svd_params["default"]["S_low"].mul_(1.5)
    ctx.model.eval()
    with torch.no_grad():
        wrapped = _loss(ctx.model, tokenizer, seq2seq).item()
    assert wrapped != pytest.approx(untrained, rel=1e-4)  # the stage changed the function
    method.end_training(ctx, stage)
    assert not any(isinstance(m, OSFLayer) for m in ctx.model.modules())
    assert not any(p.requires_grad for p in ctx.model.parameters())
    with torch.no_grad():
        assert _loss(ctx.model, tokenizer, seq2seq).item() == pytest.approx(wrapped, rel=1e-5)


def _two_adapters(model, seq2seq):
    from olora.core.adapters import peft_lora_config

    cfg = RunConfig()
    model = add_adapter(model, "past", peft_lora_config(cfg.lora, model, seq2seq))
    torch.manual_seed(3)
    model = add_adapter(model, "new", peft_lora_config(cfg.lora, model, seq2seq))
    return model


def test_complement_init_starts_the_code_penalty_at_zero_and_keeps_row_norms(tiny):
    model, _, seq2seq = tiny
    model = _two_adapters(model, seq2seq)
    norms = [layer.lora_A["new"].weight.norm(dim=1).clone() for layer in lora_layers(model)]
    code = OrthogonalityPenalty(model, ["past"], "new", "code")
    assert code().item() > 1e-3
    assert complement_init(model, ["past"], "new") == len(lora_layers(model))
    assert code().item() < 1e-4 * len(lora_layers(model))
    for layer, norm in zip(lora_layers(model), norms, strict=True):
        torch.testing.assert_close(layer.lora_A["new"].weight.norm(dim=1), norm)


def test_normalized_penalty_is_a_share_in_0_1_and_blind_to_scale(tiny):
    model, _, seq2seq = tiny
    model = _two_adapters(model, seq2seq)
    penalty = OrthogonalityPenalty(model, ["past"], "new", "normalized")
    share = penalty().item()
    width = lora_layers(model)[0].lora_A["new"].weight.shape[1]
    rank = lora_layers(model)[0].lora_A["new"].weight.shape[0]
    assert 0 < share < 1 and share == pytest.approx(rank / width, rel=0.6)  # random rows: ~ r / d
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_A["new"].weight.mul_(10)
    assert penalty().item() == pytest.approx(share, rel=1e-5)
    complement_init(model, ["past"], "new")
    assert penalty().item() < 1e-6
    with torch.no_grad():  # a new adapter equal to the past one lies wholly inside its span
        for layer in lora_layers(model):
            layer.lora_A["new"].weight.copy_(layer.lora_A["past"].weight)
    assert penalty().item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("option", ["olora.init=complement", "olora.orth=normalized"])
def test_plasticity_options_run_end_to_end_and_change_the_run(tiny_dirs, tmp_path, option):
    cli_run(tiny_dirs["llama"], tmp_path / "base", "method=olora", "train.lr=0.01")
    res = cli_run(tiny_dirs["llama"], tmp_path / "opt", "method=olora", "train.lr=0.01", option)
    assert res["config"]["olora"][option.split(".")[1].split("=")[0]] == option.split("=")[1]
    base_log = (tmp_path / "base" / "tasks" / "1-newsdesk" / "train_log.jsonl").read_text()
    assert (tmp_path / "opt" / "tasks" / "1-newsdesk" / "train_log.jsonl").read_text() != base_log


def test_gradient_terms_split_the_accumulated_gradient():
    from olora.core.train import gradient_terms

    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    nll = (p * torch.tensor([3.0, 0.0])).sum()  # ∇ = (3, 0)
    pen = lambda: p.pow(2).sum()  # noqa: E731  ∇ = 2p = (2, 4)
    (nll + 0.5 * pen()).backward()
    out = gradient_terms({"all": [p]}, {"orth": (0.5, pen)})
    assert out["grad/all/nll"] == pytest.approx(3.0)
    assert out["grad/all/orth"] == pytest.approx(0.5 * (4 + 16) ** 0.5)
    assert out["cos/all/orth"] == pytest.approx(3 * 1 / (3 * (1 + 4) ** 0.5))
    torch.testing.assert_close(p.grad, torch.tensor([4.0, 2.0]))  # the gradient itself is untouched


def test_grad_norm_log_shows_the_penalty_alone_moves_lora_a_at_the_first_step(tiny_dirs, tmp_path):
    """lora_B starts at zero, so the task's gradient on lora_A is zero at the first step of a task: with
    the code penalty on, lora_A's first update is the penalty's alone (and Adam gives it full size)."""
    import json

    out = tmp_path / "run"
    cli_run(tiny_dirs["llama"], out, "method=olora", "log.grad_norms=true", "train.log_every=1")
    rows = [json.loads(x) for x in (out / "tasks" / "1-newsdesk" / "train_log.jsonl").read_text().splitlines()]
    first = rows[0]
    assert first["grad/lora_A/nll"] < 1e-6 * first["grad/lora_A/orth"] and first["grad/lora_A/orth"] > 0
    assert first["grad/lora_B/nll"] > 0 and first["grad/lora_B/orth"] == 0  # the code penalty reads lora_A only
    assert rows[1]["grad/lora_A/nll"] > 0  # once B has moved, the task reaches lora_A
