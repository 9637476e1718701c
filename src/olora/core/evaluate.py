"""Evaluation: greedy generation, scored per task by its metric.

A task with a label set scores 100 · mean exact match after SQuAD-style normalisation (lowercase, drop
punctuation, collapse spaces; articles are kept), as the official protocol; a free-form task scores 100 ·
mean ROUGE-L F1 (rouge-score). Generation stops at eos or after ``max_new_tokens``, which defaults to the
longest answer's token count + 2 (its eos and one spare): labels are 1-5 tokens, so decoding 50 tokens
(official, and the paper presets' ``eval.max_new_tokens``) is mostly waste.
Prompts are sorted by length before batching, so little compute goes to padding.

Decoder-only models decode with a plain greedy loop over the KV cache instead of ``generate()``:
the batch's common prompt head runs once (olora.core.prefix), the loop stops as soon as every row has
emitted eos, and the LM head runs on the last position only. Seq2seq models use ``generate()``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedTokenizerBase

from olora.core.prefix import cache_kwarg, decoder_forward, last_logit_only, output_cache
from olora.data.encoding import Encoded, collate_prompts
from olora.data.tasks import Task

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


@dataclass
class TaskEval:
    accuracy: float  # percent
    predictions: list[str]


@torch.inference_mode()
def greedy_decode(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], max_new_tokens: int, eos_id: int, pad_id: int
) -> torch.Tensor:
    """Greedy continuation of a left-padded decoder-only batch (from ``collate_prompts``):
    new token ids, B × ≤max_new_tokens, ``pad_id`` after a row's eos."""
    rows = batch["input_ids"].shape[0]
    mask, pos = batch["attention_mask"], batch["position_ids"]
    kv_name, keep = cache_kwarg(model), last_logit_only(model)
    out = decoder_forward(model, batch, use_cache=True, **keep)  # the prompt, its shared head run once
    done = torch.zeros(rows, dtype=torch.bool, device=mask.device)
    new: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(dim=-1).masked_fill(done, pad_id)
        new.append(token)
        done |= token == eos_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
        pos = pos[:, -1:] + 1
        kv = {kv_name: output_cache(out)}
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=pos, use_cache=True, **kv, **keep)
    return torch.stack(new, dim=1)


@torch.inference_mode()
def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Encoded],
    *,
    seq2seq: bool,
    batch_size: int,
    max_new_tokens: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[str]:
    """Greedy answers for each encoded prompt, in the input order."""
    config = GenerationConfig(  # seq2seq only: decoder-only models use greedy_decode
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].prompt_ids))
    answers: list[str] = [""] * len(examples)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress):
        idx = order[start : start + batch_size]
        batch = collate_prompts([examples[i] for i in idx], tokenizer.pad_token_id, seq2seq)
        batch = {k: v.to(device) for k, v in batch.items()}
        if seq2seq:
            new_tokens = model.generate(**batch, generation_config=config)
        else:
            new_tokens = greedy_decode(model, batch, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
        for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            answers[i] = text.strip()
    model.train(was_training)
    return answers


def label_token_budget(tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> int:
    """Tokens needed to generate the longest label and its eos (plus one spare)."""
    return max(len(tokenizer(" " + lab, add_special_tokens=False)["input_ids"]) for lab in labels) + 2


def answer_budget(tokenizer: PreTrainedTokenizerBase, task: Task, cap: int | None) -> int:
    """New tokens to generate for ``task``: ``cap`` (eval.max_new_tokens) for a label set if given, else
    the longest label + 2; for free-form answers the longest training target + 2, at most ``cap``."""
    if task.labels:
        return cap or label_token_budget(tokenizer, task.labels)
    longest = label_token_budget(tokenizer, sorted({e.label for e in task.train}) or [task.longest_target])
    return min(longest, cap) if cap else longest


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F1 (rouge-score, the scorer of the ROUGE papers' reimplementation), in [0, 1]."""
    return _rouge_scorer().score(gold, prediction)["rougeL"].fmeasure


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


METRICS = {"exact_match": lambda p, g: float(exact_match(p, g)), "rouge_l": rouge_l}


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Encoded],
    golds: list[str],
    *,
    seq2seq: bool,
    batch_size: int,
    max_new_tokens: int,
    metric: str = "exact_match",
    device: torch.device | str = "cpu",
) -> TaskEval:
    """Greedy answers and their score: 100 · mean of ``metric`` (exact match or ROUGE-L F1)."""
    preds = generate_answers(
        model,
        tokenizer,
        examples,
        seq2seq=seq2seq,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
    )
    score = METRICS[metric]
    return TaskEval(100.0 * sum(score(p, g) for p, g in zip(preds, golds, strict=True)) / max(1, len(golds)), preds)
