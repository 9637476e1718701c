"""Speed-ups that must not change results: shared prompt heads computed once (decoder-only), greedy
decoding on the KV cache, and length-grouped batches."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from olora.core.evaluate import greedy_decode
from olora.core.train import answer_nll, row_chunks
from olora.data.builtin import builtin_task
from olora.data.encoding import MIN_SHARED, PromptEncoder, collate_prompts, collate_train, shared_prefix_length


def test_shared_prefix_length_leaves_every_row_a_token():
    head = list(range(MIN_SHARED + 2))
    assert shared_prefix_length([head + [1, 2], head + [3]]) == len(head)
    assert shared_prefix_length([head + [1], head + [1]]) == len(head)  # identical rows keep their last token
    assert shared_prefix_length([head[:3] + [9], head[:3] + [8]]) == 0  # too short to pay off
    assert shared_prefix_length([head + [1]]) == 0  # a single row shares nothing


@pytest.fixture
def llama_lora(tiny_dirs):
    from olora.core.models import load_model

    model, tok = load_model(str(tiny_dirs["llama"]))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config).eval(), tok


def _encoded(tok, n: int = 6):
    task = builtin_task("newsdesk")
    return PromptEncoder(tok, False, 256).encode(task, task.test[:n])


def test_shared_head_gives_the_same_loss_and_gradients(llama_lora):
    model, tok = llama_lora
    enc = _encoded(tok)
    shared = collate_train(enc, tok.pad_token_id, False, share_prefix=True)
    plain = collate_train(enc, tok.pad_token_id, False, share_prefix=False)
    assert shared["prefix_ids"].shape[1] >= MIN_SHARED
    assert shared["input_ids"].shape[1] + shared["prefix_ids"].shape[1] == plain["input_ids"].shape[1]
    results = []
    for batch in (plain, shared):
        model.zero_grad()
        loss = answer_nll(model, batch, False)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_greedy_decode_equals_generate(llama_lora, share_prefix):
    model, tok = llama_lora
    enc = _encoded(tok)
    batch = collate_prompts(enc, tok.pad_token_id, False, share_prefix=share_prefix)
    ours = greedy_decode(model, batch, 5, tok.eos_token_id, tok.pad_token_id)
    plain = collate_prompts(enc, tok.pad_token_id, False, share_prefix=False)
    with torch.no_grad():
        ref = model.generate(
            input_ids=plain["input_ids"],
            attention_mask=plain["attention_mask"],
            max_new_tokens=5,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[:, plain["input_ids"].shape[1] :]
    assert ours.shape[0] == ref.shape[0] and any(tok.batch_decode(ref, skip_special_tokens=True))
    assert tok.batch_decode(ours, skip_special_tokens=True) == tok.batch_decode(ref, skip_special_tokens=True)


def test_length_grouped_batches_cover_each_example_once_and_pad_less():
    from olora.core.train import batch_order

    lengths = torch.randint(20, 400, (300,), generator=torch.Generator().manual_seed(0)).tolist()

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    grouped = batch_order(len(lengths), 8, seed=1, epoch=0, lengths=lengths)
    plain = batch_order(len(lengths), 8, seed=1, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    assert grouped == batch_order(len(lengths), 8, seed=1, epoch=0, lengths=lengths)
    assert grouped != batch_order(len(lengths), 8, seed=1, epoch=1, lengths=lengths)
    assert padded(grouped) < 0.8 * padded(plain)


def test_row_chunks_cap_the_padded_size_and_keep_every_row_in_order():
    lengths = [50, 40, 40, 30, 10, 120]
    chunks = row_chunks(lengths, max_tokens=100)
    assert [i for c in chunks for i in c] == list(range(len(lengths)))
    assert all(len(c) * max(lengths[i] for i in c) <= 100 or len(c) == 1 for c in chunks)
    assert chunks == [[0, 1], [2, 3], [4], [5]]  # [4] cannot join [5]: 2 × 120 > 100
    assert row_chunks(lengths, max_tokens=0) == [list(range(len(lengths)))]


def test_chunked_micro_batches_give_the_same_gradient(tiny, monkeypatch):
    """train.max_batch_tokens splits micro-batches into token-weighted chunks: same loss, same
    gradient (no dropout), with gradient accumulation and the orthogonality penalty on."""
    from accelerate import Accelerator

    from olora.config import LoRAConfig, TrainConfig
    from olora.core.adapters import OrthogonalityPenalty, activate, add_adapter, lora_layers, peft_lora_config
    from olora.core.train import TrainingHooks, train_task

    model, tok, seq2seq = tiny
    for name in ("t0", "t1"):
        model = add_adapter(model, name, peft_lora_config(LoRAConfig(dropout=0.0), model, seq2seq))
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_B["t0"].weight.normal_(0, 0.5)
    activate(model, ["t0", "t1"], trainable="t1")
    task = builtin_task("newsdesk")
    enc = PromptEncoder(tok, seq2seq, 256).encode(task, task.train[:12])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    grads: list[torch.Tensor] = []
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    histories = []
    for cap in (0, 1):  # 1: every row is a chunk of its own
        model.load_state_dict(start)
        cfg = TrainConfig(batch_size=3, grad_accum=2, max_steps=2, log_every=1, max_batch_tokens=cap)
        penalty = OrthogonalityPenalty(model, ["t0"], "t1")
        histories.append(
            train_task(
                model,
                enc,
                cfg,
                seq2seq=seq2seq,
                pad_id=tok.pad_token_id,
                seed=0,
                accelerator=Accelerator(cpu=True),
                hooks=TrainingHooks(weight_terms={"orth": (0.5, penalty)}),
            ).history
        )
    assert len(grads) == 4 and grads[0].abs().sum() > 0
    # The first step's gradient is the same up to rounding; later steps start from Adam updates that
    # amplify rounding in near-zero gradient entries, so only their losses are compared.
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-4, atol=1e-6)
    for whole, chunked in zip(*histories, strict=True):
        assert chunked["nll"] == pytest.approx(whole["nll"], rel=1e-5)
        assert chunked["orth"] == pytest.approx(whole["orth"], rel=1e-5)
