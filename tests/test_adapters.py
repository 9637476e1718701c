"""The method's invariants, on tiny T5 and tiny LLaMA."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from peft import PeftModel

from olora.config import LoRAConfig, TrainConfig
from olora.core.adapters import (
    OrthogonalityPenalty,
    activate,
    add_adapter,
    concat_adapters,
    l2_norm,
    lora_layers,
    peft_lora_config,
    trainable_parameters,
)
from olora.core.models import load_model
from olora.core.train import TrainingHooks, train_task
from olora.data.builtin import builtin_task
from olora.data.encoding import PromptEncoder, collate_train
from olora.store.artifacts import save_adapter


def _batch(tok, seq2seq, n=4):
    task = builtin_task("sentiment")
    enc = PromptEncoder(tok, seq2seq, 128).encode(task, task.test[:n])
    # No shared prompt head: ``model(**batch)`` would pass ``prefix_ids`` into LLaMA's **kwargs, which ignore it,
    # and every invariant would compare forwards of the prompts' tails (olora.core.prefix runs the head).
    return collate_train(enc, tok.pad_token_id, seq2seq, share_prefix=False), enc


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _randomize(model, names):
    """Give every adapter non-zero B so that it changes the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model):
            for name in names:
                layer.lora_B[name].weight.copy_(torch.randn(layer.lora_B[name].weight.shape, generator=g) * 0.5)


def _with_adapters(model, seq2seq, names):
    cfg = LoRAConfig(dropout=0.0)
    for name in names:
        model = add_adapter(model, name, peft_lora_config(cfg, model, seq2seq))
    activate(model, names, trainable=None)
    return model


def test_fresh_adapter_leaves_outputs_unchanged(tiny):
    model, tok, seq2seq = tiny
    batch, _ = _batch(tok, seq2seq)
    before = _logits(model, batch)
    model = _with_adapters(model, seq2seq, ["t0"])
    assert len(lora_layers(model)) == 4 if not seq2seq else len(lora_layers(model)) == 12
    torch.testing.assert_close(_logits(model, batch), before, rtol=0, atol=0)


def test_past_adapters_get_no_gradient_and_stay_identical(tiny):
    model, tok, seq2seq = tiny
    model = _with_adapters(model, seq2seq, ["t0", "t1"])
    _randomize(model, ["t0"])
    activate(model, ["t0", "t1"], trainable="t1")
    trainable = {id(p) for p in trainable_parameters(model)}
    for layer in lora_layers(model):
        assert id(layer.lora_A["t1"].weight) in trainable and id(layer.lora_B["t1"].weight) in trainable
        assert not layer.lora_A["t0"].weight.requires_grad and not layer.lora_B["t0"].weight.requires_grad
    assert len(trainable) == 2 * len(lora_layers(model))
    past_before = {k: v.clone() for k, v in model.state_dict().items() if ".t0." in k or k.endswith(".t0")}
    new_before = {k: v.clone() for k, v in model.state_dict().items() if ".t1." in k}
    _, enc = _batch(tok, seq2seq, n=8)
    penalty = OrthogonalityPenalty(model, ["t0"], "t1")
    train_task(
        model,
        enc,
        TrainConfig(batch_size=4, lr=1e-2),
        seq2seq=seq2seq,
        pad_id=tok.pad_token_id,
        seed=0,
        accelerator=Accelerator(cpu=True),
        hooks=TrainingHooks(weight_terms={"orth": (0.5, penalty)}),
    )
    state = model.state_dict()
    assert past_before and all(torch.equal(state[k], v) for k, v in past_before.items())
    assert any(not torch.equal(state[k], v) for k, v in new_before.items())
    for layer in lora_layers(model):
        assert layer.lora_A["t0"].weight.grad is None


def _set_lora_A(model, name, rows_by_layer):
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_A[name].weight.copy_(rows_by_layer(layer.lora_A[name].weight.shape))


def test_orthogonality_penalty_zero_iff_orthogonal_and_matches_hand_computation(tiny):
    model, _, seq2seq = tiny
    model = _with_adapters(model, seq2seq, ["t0", "t1"])
    r, d = lora_layers(model)[0].lora_A["t0"].weight.shape
    eye = torch.eye(d)
    _set_lora_A(model, "t0", lambda s: eye[: s[0]])  # basis vectors e_0..e_7
    _set_lora_A(model, "t1", lambda s: eye[s[0] : 2 * s[0]])  # e_8..e_15: orthogonal
    assert OrthogonalityPenalty(model, ["t0"], "t1")().item() == 0.0
    g = torch.Generator().manual_seed(0)
    _set_lora_A(model, "t1", lambda s: torch.randn(s, generator=g))
    got = OrthogonalityPenalty(model, ["t0"], "t1")().item()
    expected = sum(
        (layer.lora_A["t0"].weight @ layer.lora_A["t1"].weight.T).abs().sum().item() for layer in lora_layers(model)
    )
    assert got > 0
    assert got == pytest.approx(expected, rel=1e-5)


def test_paper_variant_is_squared_frobenius_on_lora_B(tiny):
    model, _, seq2seq = tiny
    model = _with_adapters(model, seq2seq, ["t0", "t1", "t2"])
    _randomize(model, ["t0", "t1", "t2"])
    got = OrthogonalityPenalty(model, ["t0", "t1"], "t2", variant="paper")().item()
    expected = sum(
        ((layer.lora_B[p].weight.T @ layer.lora_B["t2"].weight) ** 2).sum().item()
        for layer in lora_layers(model)
        for p in ("t0", "t1")
    )
    assert got == pytest.approx(expected, rel=1e-5)
    # Orthogonal output subspaces give zero.
    with torch.no_grad():
        for layer in lora_layers(model):
            out, r = layer.lora_B["t0"].weight.shape
            eye = torch.eye(out)
            layer.lora_B["t0"].weight.copy_(eye[:, :r])
            layer.lora_B["t1"].weight.copy_(eye[:, r : 2 * r] * 3)
    assert OrthogonalityPenalty(model, ["t0"], "t1", variant="paper")().item() == 0.0


def test_l2_norm_matches_hand_computation(tiny):
    model, _, seq2seq = tiny
    model = _with_adapters(model, seq2seq, ["t0"])
    _randomize(model, ["t0"])
    expected = sum(
        layer.lora_A["t0"].weight.norm().item() + layer.lora_B["t0"].weight.norm().item()
        for layer in lora_layers(model)
    )
    assert l2_norm(model, "t0").item() == pytest.approx(expected, rel=1e-5)


def test_all_active_equals_concatenated_adapter(tiny):
    model, tok, seq2seq = tiny
    batch, _ = _batch(tok, seq2seq)
    names = ["t0", "t1", "t2"]
    model = _with_adapters(model.double(), seq2seq, names)  # float64: the equality is exact maths
    _randomize(model, names)
    activate(model, names, trainable=None)
    all_active = _logits(model, batch)
    concat_adapters(model, names, "cat_peft")
    activate(model, ["cat_peft"], trainable=None)
    torch.testing.assert_close(_logits(model, batch), all_active, rtol=1e-9, atol=1e-9)
    with model.disable_adapter():
        assert not torch.allclose(all_active, _logits(model, batch))


def test_save_load_round_trip(tiny, tiny_dirs, kind, tmp_path):
    model, tok, seq2seq = tiny
    batch, _ = _batch(tok, seq2seq)
    names = ["t0", "t1"]
    model = _with_adapters(model, seq2seq, names)
    _randomize(model, names)
    activate(model, names, trainable=None)
    expected = _logits(model, batch)
    for name in names:
        save_adapter(model, name, tmp_path / name)
    base, _ = load_model(str(tiny_dirs[kind]))
    base_logits = _logits(base, batch)
    loaded = PeftModel.from_pretrained(base, tmp_path / "t0", adapter_name="t0")
    loaded.load_adapter(tmp_path / "t1", adapter_name="t1")
    loaded.base_model.set_adapter(names)
    torch.testing.assert_close(_logits(loaded, batch), expected, rtol=0, atol=0)
    assert not torch.allclose(base_logits, expected)
