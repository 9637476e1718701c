"""Tokenising prompts and targets, and padding them into batches.

Prompts longer than ``max_source_length`` lose tokens from the *input text* only: the task prefix,
instruction, option list and ``Answer:`` always survive (the official code cut the end, losing
``Answer:``). Prompt and target are tokenised separately and concatenated, so the loss mask of a
decoder-only model starts exactly at the first answer token (no off-by-one from re-tokenising).

Decoder-only batches are *left*-padded with explicit position ids, for training and generation
alike: every answer then ends in the last column, so the LM head runs on the answer columns only.
The prompts' common head is split off as ``prefix_ids`` and computed once per batch (olora.core.prefix).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from olora.data.tasks import Example, Task
from olora.errors import OloraError

log = logging.getLogger(__name__)
MIN_SHARED = 8  # below this, the extra model call costs more than the tokens it saves


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the common leading run of ``rows``, leaving every row at least one own token
    (the suffix pass must produce the logit that predicts each row's next token)."""
    if len(rows) < 2:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n if n >= MIN_SHARED else 0


IGNORE = -100


@dataclass
class Encoded:
    prompt_ids: list[int]
    target_ids: list[int]  # label tokens followed by eos
    truncated: bool = False


class PromptEncoder:
    """Turns a task's examples into token ids under the official prompt format."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        seq2seq: bool,
        max_source_length: int,
        add_task_name: bool = True,
        add_dataset_name: bool = True,
    ):
        self.tokenizer = tokenizer
        self.seq2seq = seq2seq
        self.max_len = max_source_length
        self.add_task_name = add_task_name
        self.add_dataset_name = add_dataset_name

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def encode_raw(self, prompt: str) -> list[int]:
        """Token ids of a whole prompt given as text (task-free inference)."""
        return self._ids(prompt)

    def encode_prompt(self, task: Task, text: str) -> tuple[list[int], bool]:
        """Token ids of the prompt, and whether its input text had to be cut to fit."""
        head, tail = task.prompt_parts(self.add_task_name, self.add_dataset_name)
        ids = self._ids(head + text + tail)
        if len(ids) <= self.max_len:
            return ids, False
        fixed = len(self._ids(head + tail))
        budget = self.max_len - fixed
        if budget <= 0:
            raise OloraError(
                f"task {task.name!r}: the instruction and options alone take {fixed} tokens, more than "
                f"data.max_source_length={self.max_len}; raise data.max_source_length"
            )
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        while budget > 0:
            cut = self.tokenizer.decode(text_ids[:budget], skip_special_tokens=True)
            ids = self._ids(head + cut + tail)
            if len(ids) <= self.max_len:
                return ids, True
            budget -= max(1, len(ids) - self.max_len)
        return self._ids(head + tail), True

    def encode_target(self, label: str) -> list[int]:
        eos = self.tokenizer.eos_token_id
        if self.seq2seq:
            ids = self._ids(label)
        else:
            # The answer follows "Answer:" after one space, as a reader would write it.
            ids = self.tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        return ids if ids and ids[-1] == eos else ids + [eos]

    def encode(self, task: Task, examples: list[Example]) -> list[Encoded]:
        targets = {label: self.encode_target(label) for label in task.labels}  # a label set: tokenised once
        out = []
        for ex in examples:
            ids, cut = self.encode_prompt(task, ex.text)
            target = targets[ex.label] if ex.label in targets else self.encode_target(ex.label)
            out.append(Encoded(ids, target, cut))
        n_cut = sum(e.truncated for e in out)
        if n_cut:
            log.warning(
                "task %s: %d of %d prompts were longer than data.max_source_length=%d; their "
                "input text was cut (instruction and Answer: kept)",
                task.name,
                n_cut,
                len(out),
                self.max_len,
            )
        return out


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 at each row's first real token (left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _decoder_rows(
    prompts: list[list[int]], tails: list[list[int]], pad_id: int, share_prefix: bool
) -> dict[str, torch.Tensor]:
    """Left-padded ``prompt + tail`` rows; with ``share_prefix``, the prompts' common head is
    split off as ``prefix_ids`` (1×P) and the rest is padded after it (see olora.core.prefix)."""
    shared = shared_prefix_length(prompts) if share_prefix else 0
    input_ids, mask = _left_pad([p[shared:] + t for p, t in zip(prompts, tails, strict=True)], pad_id)
    if not shared:
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids(mask)}
    head = torch.ones((len(prompts), shared), dtype=torch.long)
    return {
        "prefix_ids": torch.tensor([prompts[0][:shared]]),
        "input_ids": input_ids,
        "attention_mask": torch.cat([head, mask], dim=1),
        "position_ids": shared + position_ids(mask),
    }


def collate_train(
    batch: list[Encoded], pad_id: int, seq2seq: bool, share_prefix: bool = True
) -> dict[str, torch.Tensor]:
    """Seq2seq: inputs + labels (-100 on padding). Decoder-only: left-padded prompt+answer with
    labels on the answer tokens only, so ``labels[:, -n_answer:]`` holds every supervised token."""
    if seq2seq:
        input_ids, mask = _right_pad([b.prompt_ids for b in batch], pad_id)
        labels, label_mask = _right_pad([b.target_ids for b in batch], pad_id)
        labels[label_mask == 0] = IGNORE
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    out = _decoder_rows([b.prompt_ids for b in batch], [b.target_ids for b in batch], pad_id, share_prefix)
    labels = torch.full_like(out["input_ids"], IGNORE)
    for i, b in enumerate(batch):
        labels[i, labels.shape[1] - len(b.target_ids) :] = torch.tensor(b.target_ids)
    return {**out, "labels": labels}


def collate_prompts(
    batch: list[Encoded], pad_id: int, seq2seq: bool, share_prefix: bool = True
) -> dict[str, torch.Tensor]:
    if seq2seq:
        input_ids, mask = _right_pad([b.prompt_ids for b in batch], pad_id)
        return {"input_ids": input_ids, "attention_mask": mask}
    return _decoder_rows([b.prompt_ids for b in batch], [[] for _ in batch], pad_id, share_prefix)
