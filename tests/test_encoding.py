"""Prompt truncation, loss masks, and padding that changes nothing."""

from __future__ import annotations

import pytest
import torch

from olora.core.evaluate import exact_match, generate_answers, normalize_answer
from olora.core.train import answer_nll
from olora.data.builtin import builtin_task
from olora.data.encoding import IGNORE, PromptEncoder, collate_train
from olora.data.tasks import Example
from olora.errors import OloraError


def test_truncation_cuts_only_the_input_text(tiny):
    _, tok, seq2seq = tiny
    task = builtin_task("newsdesk")
    enc = PromptEncoder(tok, seq2seq, max_source_length=80)
    long_text = "Text: " + "the striker scored twice " * 40
    ids, cut = enc.encode_prompt(task, long_text)
    text = tok.decode(ids, skip_special_tokens=True)
    head, tail = task.prompt_parts()
    assert cut and len(ids) <= 80
    assert text.startswith(head) and text.endswith(tail)
    short_ids, short_cut = enc.encode_prompt(task, "Text: hi")
    assert not short_cut and tok.decode(short_ids, skip_special_tokens=True).endswith("Answer:")


def test_prompt_that_cannot_fit_is_an_error(tiny):
    _, tok, seq2seq = tiny
    with pytest.raises(OloraError, match="raise data.max_source_length"):
        PromptEncoder(tok, seq2seq, 16).encode_prompt(builtin_task("newsdesk"), "Text: x")


def test_targets_end_with_eos_and_labels_cover_only_the_answer(tiny):
    _, tok, seq2seq = tiny
    task = builtin_task("sentiment")
    enc = PromptEncoder(tok, seq2seq, 128).encode(task, task.test[:3])
    assert all(e.target_ids[-1] == tok.eos_token_id for e in enc)
    batch = collate_train(enc, tok.pad_token_id, seq2seq)
    for i, e in enumerate(enc):
        supervised = batch["labels"][i][batch["labels"][i] != IGNORE].tolist()
        assert supervised == e.target_ids


def test_padded_batch_gives_the_same_loss_as_single_examples(tiny):
    """Left padding + position ids + answer-only logits must not change any example's loss."""
    model, tok, seq2seq = tiny
    model.eval()
    task = builtin_task("newsdesk")
    examples = [task.test[0], Example("Text: a much longer sentence " * 5, task.test[1].label)]
    enc = PromptEncoder(tok, seq2seq, 256).encode(task, examples)
    with torch.no_grad():
        singles = [answer_nll(model, collate_train([e], tok.pad_token_id, seq2seq), seq2seq, True) for e in enc]
        both = answer_nll(model, collate_train(enc, tok.pad_token_id, seq2seq), seq2seq, True)
        full = answer_nll(model, collate_train(enc, tok.pad_token_id, seq2seq), seq2seq, False)
    n = [len(e.target_ids) for e in enc]
    expected = (singles[0] * n[0] + singles[1] * n[1]) / sum(n)
    torch.testing.assert_close(both, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, both, rtol=1e-5, atol=1e-5)


def test_batched_generation_equals_one_by_one(tiny):
    model, tok, seq2seq = tiny
    task = builtin_task("helpline")
    enc = PromptEncoder(tok, seq2seq, 256).encode(task, task.test[:5])
    batched = generate_answers(model, tok, enc, seq2seq=seq2seq, batch_size=5, max_new_tokens=4)
    single = [generate_answers(model, tok, [e], seq2seq=seq2seq, batch_size=1, max_new_tokens=4)[0] for e in enc]
    assert batched == single


def test_normalisation_is_the_official_one():
    assert normalize_answer("  Science,  or Technology. ") == "science or technology"
    assert exact_match("very positive!", "Very Positive")
    assert not exact_match("the World", "World")  # articles are kept, as in the official metric
