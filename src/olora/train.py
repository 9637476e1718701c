"""The per-task training loop: plain PyTorch, accelerate for devices.

Loss per optimizer step = mean answer-token NLL + λ1·L_orth + λ2·L2. The NLL of each micro-batch is
divided by ``grad_accum``; the regularisers depend only on the weights, which do not change inside an
accumulation window, so they are added once per window at full weight (the official code, outside
DeepSpeed, multiplied them by ``grad_accum`` by mistake).
"""

from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from olora.adapters import OrthogonalityPenalty, l2_norm, trainable_parameters
from olora.config import TrainConfig
from olora.encoding import IGNORE, Encoded, collate_train
from olora.errors import OloraError


class TrainingDiverged(OloraError):
    """The loss became NaN or infinite; the task's weights are not saved."""


@dataclass
class TaskTraining:
    steps: int = 0
    wall_s: float = 0.0
    last_loss: float | None = None
    history: list[dict] = field(default_factory=list)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def answer_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], seq2seq: bool, logits_to_keep: bool
) -> torch.Tensor:
    """Mean cross-entropy over answer tokens.

    Decoder-only batches are left-padded, so all answers sit in the last columns: the LM head is
    evaluated there only (``logits_to_keep``), which saves most of its cost for long prompts.
    """
    if seq2seq:
        return model(**batch).loss
    labels = batch["labels"]
    supervised_cols = (labels != IGNORE).any(dim=0).nonzero()
    first = int(supervised_cols[0]) if len(supervised_cols) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # +1: the logit before the first answer token predicts it
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if logits_to_keep:
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    target = labels[:, -(keep - 1) :]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE
    )


def num_optimizer_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def train_task(
    model: torch.nn.Module,
    examples: list[Encoded],
    cfg: TrainConfig,
    *,
    seq2seq: bool,
    pad_id: int,
    seed: int,
    accelerator: Accelerator,
    penalty: OrthogonalityPenalty | None = None,
    l2_adapter: str | None = None,
    lambda_orth: float = 0.0,
    lambda_l2: float = 0.0,
    log_path: Path | None = None,
    desc: str = "train",
) -> TaskTraining:
    """Train the model's trainable parameters (the current task's adapter) on ``examples``."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        examples,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=partial(collate_train, pad_id=pad_id, seq2seq=seq2seq),
    )
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    use_keep = not seq2seq and _accepts_logits_to_keep(model)
    total = num_optimizer_steps(len(examples), cfg)
    result = TaskTraining()
    use_orth = penalty is not None and lambda_orth > 0
    use_l2 = l2_adapter is not None and lambda_l2 > 0
    log_file = open(log_path, "a", encoding="utf-8") if log_path and accelerator.is_main_process else None
    bar = tqdm(total=total, desc=desc, disable=not accelerator.is_main_process, dynamic_ncols=True)
    start = time.perf_counter()
    wrapped.train()
    micro, window_nll = 0, torch.zeros((), device=accelerator.device)
    try:
        for _epoch in range(cfg.epochs):
            for batch in loader:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                nll = answer_nll(wrapped, batch, seq2seq, use_keep)
                loss = nll / cfg.grad_accum
                micro += 1
                window_nll += nll.detach() / cfg.grad_accum
                end_of_window = micro % cfg.grad_accum == 0 or micro == len(loader) * cfg.epochs
                orth = l2 = None
                if end_of_window and use_orth:
                    orth = penalty()
                    loss = loss + lambda_orth * orth
                if end_of_window and use_l2:
                    l2 = l2_norm(model, l2_adapter)
                    loss = loss + lambda_l2 * l2
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(
                        f"{desc}: loss is {loss.item()} at step {result.steps + 1}; nothing of this task "
                        "was saved (the last good state is the previous task's): lower train.lr"
                    )
                accelerator.backward(loss)
                if not end_of_window:
                    continue
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                result.steps += 1
                bar.update(1)
                if result.steps % cfg.log_every == 0 or result.steps == total:
                    row = {
                        "step": result.steps,
                        "nll": window_nll.item(),
                        "orth": orth.item() if orth is not None else 0.0,
                        "l2": l2.item() if l2 is not None else 0.0,
                    }
                    row["loss"] = row["nll"] + lambda_orth * row["orth"] + lambda_l2 * row["l2"]
                    result.history.append(row)
                    result.last_loss = row["loss"]
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if log_file:
                        log_file.write(json.dumps(row) + "\n")
                        log_file.flush()
                window_nll = torch.zeros((), device=accelerator.device)
                if result.steps >= total:
                    break
            if result.steps >= total:
                break
    finally:
        bar.close()
        if log_file:
            log_file.close()
        accelerator.free_memory()
    result.wall_s = time.perf_counter() - start
    return result
