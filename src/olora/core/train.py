"""The per-stage training loop: plain PyTorch, accelerate for devices; a method plugs in through
``TrainingHooks``.

Loss per optimizer step = mean answer-token NLL + Σ λ·(weight term) + Σ λ·(batch term). The NLL and the
batch terms of each micro-batch (or row chunk of one) are weighted by their share of the step, so
accumulation and chunking leave the gradient unchanged; weight terms depend only on the weights, which do
not change inside a step, so they are added once per step at full weight (the official O-LoRA code,
outside DeepSpeed, multiplied its regularisers by the accumulation steps by mistake). Divergence is checked
at log and checkpoint steps (no host-device sync per micro-batch), and a checkpoint is never written after
a diverged step.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from olora.config import TrainConfig
from olora.core.adapters import adapter_modules, trainable_parameters
from olora.core.prefix import decoder_forward, forward_params
from olora.core.resources import resolve_train_config
from olora.core.sharding import (
    average_whole_gradients,
    gathered,
    gathered_optimizer_state,
    is_shard,
    is_sharded,
    keep_whole,
    reshard,
    shared_embeddings,
    step_boundary,
)
from olora.data.encoding import IGNORE, Encoded, collate_train
from olora.errors import OloraError
from olora.faults import crash_point
from olora.seeding import rng_state


class TrainingDiverged(OloraError):
    """The loss became NaN or infinite; the task's weights are not saved."""


@dataclass
class TaskTraining:
    steps: int = 0
    wall_s: float = 0.0
    last_loss: float | None = None
    history: list[dict] = field(default_factory=list)


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in forward_params(model)


def answer_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], seq2seq: bool, logits_to_keep: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) aligned position by position over the answer tokens; targets are -100
    where nothing is supervised.

    Decoder-only batches are left-padded, so all answers sit in the last columns: the LM head is
    evaluated there only (``logits_to_keep``), which saves most of its cost for long prompts. A
    ``prefix_ids`` entry (the batch's common prompt head) runs once, not once per row.
    """
    if seq2seq:
        return model(**batch).logits, batch["labels"]
    labels = batch["labels"]
    supervised_cols = (labels != IGNORE).any(dim=0).nonzero()
    first = int(supervised_cols[0]) if len(supervised_cols) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # +1: the logit before the first answer token predicts it
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if logits_to_keep:
        logits = decoder_forward(model, inputs, logits_to_keep=keep).logits
    else:
        logits = decoder_forward(model, inputs).logits[:, -keep:]
    return logits[:, :-1], labels[:, -(keep - 1) :]


def autocast(device: torch.device, mixed_precision: str) -> torch.autocast:
    """bfloat16 autocast for forward passes when ``mixed_precision == "bf16"`` (a no-op otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def token_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over supervised tokens (Σ CE·mask / Σ mask)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE)


def official_llama_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official LLaMA loss (cmnfriend/O-LoRA src/model/llama.py:94-101, micro-batch 1): per sequence
    Σ CE over its n answer tokens / (n + 1) (the loss mask counts one position more than the CE sums),
    then the mean over sequences."""
    ce = F.cross_entropy(logits.transpose(1, 2).float(), target, ignore_index=IGNORE, reduction="none")
    counted = (target != IGNORE).sum(dim=1)
    return (ce.sum(dim=1) / (counted + 1)).mean()


LOSSES = {"token": token_nll, "official_llama": official_llama_nll}


def lr_multiplier(schedule: str, step: int) -> float:
    """The learning rate of optimizer step ``step`` (1-based) of a task, as a multiple of ``train.lr``.

    'deepspeed_warmup': DeepSpeed 0.10's WarmupLR as the official runs configured it (warmup_num_steps 0,
    clamped to 2, log curve, stepped after each optimizer step, lr untouched before the first): steps
    1, 2, 3, … run at 1, log(1)/log(2) = 0, 1, … so a task's second step does not move the weights (Adam's
    moments still take its gradient).
    """
    return 0.0 if schedule == "deepspeed_warmup" and step == 2 else 1.0


def answer_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], seq2seq: bool, logits_to_keep: bool = True
) -> torch.Tensor:
    return token_nll(*answer_logits(model, batch, seq2seq, logits_to_keep))


GROUP_BATCHES = 16  # length grouping sorts windows of this many micro-batches


def batch_order(n: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None) -> list[list[int]]:
    """Example indices per micro-batch: a pure function of (seed, epoch), so a resumed run can find
    its place from the step alone.

    With ``lengths``, batches are grouped by length (as transformers' ``group_by_length``): the
    shuffled examples are cut into windows of ``GROUP_BATCHES`` batches, each window is sorted by
    length and cut into batches, and the batches are shuffled again. Batches then hold examples of
    similar length, so little compute goes to padding, while every epoch still sees a new random
    order and mix of labels.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    if lengths is None:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    window = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, n, window):
        group = sorted(perm[start : start + window], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]


def optimizer_windows(lengths: list[int], cfg: TrainConfig, seed: int) -> list[list[list[int]]]:
    """One entry per optimizer step: the ``grad_accum`` micro-batches it accumulates."""
    windows = []
    for epoch in range(cfg.epochs):
        batches = batch_order(len(lengths), cfg.batch_size, seed, epoch, lengths if cfg.group_by_length else None)
        windows += [batches[i : i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
    return windows[: cfg.max_steps] if cfg.max_steps else windows


def row_chunks(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Positions 0..n-1 of a micro-batch cut into consecutive chunks whose padded size
    (rows × longest row) is at most ``max_tokens`` (a longer single row is a chunk of its own);
    ``max_tokens == 0``: one chunk."""
    chunks: list[list[int]] = [[]]
    longest = 0
    for i, length in enumerate(lengths):
        if max_tokens and chunks[-1] and (len(chunks[-1]) + 1) * max(longest, length) > max_tokens:
            chunks.append([])
            longest = 0
        chunks[-1].append(i)
        longest = max(longest, length)
    return chunks


def step_pieces(
    window: list[list[int]], examples: list[Encoded], cfg: TrainConfig, rank: int, processes: int
) -> list[tuple[list[Encoded], float]]:
    """The forward/backward passes of one optimizer step: (rows, share) per row chunk of each
    micro-batch, ``share`` = the chunk's answer tokens / its micro-batch's (``train.loss_normalization``
    'official_llama', a mean over sequences: its rows / the micro-batch's). Σ_chunks share × chunk loss =
    the micro-batch's loss, so chunking leaves the gradient unchanged.

    Data parallel: each process takes its share (every ``processes``-th row) of every micro-batch, and its
    shares are counted against the whole micro-batch's answer tokens (rows), times the processes: the
    gradients' mean over the processes is then the whole micro-batch's token mean, however unevenly the
    answer tokens fall between the processes (a mean of per-process means was off by that imbalance).
    """
    pieces = []
    weight = (lambda e: 1) if cfg.loss_normalization == "official_llama" else (lambda e: len(e.target_ids))
    for indices in window:
        rows = [examples[i] for i in indices[rank::processes]]
        supervised = sum(weight(examples[i]) for i in indices) / processes
        for chunk in row_chunks([len(e.prompt_ids) + len(e.target_ids) for e in rows], cfg.max_batch_tokens):
            part = [rows[j] for j in chunk]
            pieces.append((part, sum(weight(e) for e in part) / supervised))
    return pieces


def lockstep_pieces(
    window: list[list[int]], examples: list[Encoded], cfg: TrainConfig, rank: int, processes: int
) -> list[tuple[list[Encoded], float]]:
    """``step_pieces`` of this process, padded to the largest count over the processes with zero-share
    passes over its first row: sharded weights are all-gathered in every forward and backward, a collective
    that every process must run the same number of times (DDP only syncs at the last backward)."""
    every = [step_pieces(window, examples, cfg, r, processes) for r in range(processes)]
    pieces = every[rank]
    return pieces + [(pieces[0][0][:1], 0.0)] * (max(map(len, every)) - len(pieces))


def _trim_log(path: Path, last_step: int) -> None:
    """Drop log rows past ``last_step``: a resumed task rewrites them."""
    if not path.is_file():
        return
    rows = [r for r in path.read_text(encoding="utf-8").splitlines() if json.loads(r)["step"] <= last_step]
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


class Checkpoints(Protocol):
    """Where a stage's step checkpoints live (olora.store.checkpoint.StepCheckpoints)."""

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0) -> int: ...

    def save(self, weights: dict[str, torch.Tensor], optimizer_state: dict, step: int, rng: list[dict]) -> None: ...


WeightPenalty = Callable[[], torch.Tensor]
BatchPenalty = Callable[[dict, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainingHooks:
    """What a method plugs into one stage's training loop (olora.methods builds it; ``train_task`` runs it).

    What trains is what has ``requires_grad`` when training starts (the method sets it).
    """

    weight_terms: dict[str, tuple[float, WeightPenalty]] = field(default_factory=dict)
    """λ·term() of the weights alone (O-LoRA's orthogonality, L2, EWC), added once per optimizer step."""
    batch_terms: dict[str, tuple[float, BatchPenalty]] = field(default_factory=dict)
    """λ·term(batch, answer logits, targets) on every micro-batch (LwF's distillation)."""
    forward_hooks: list[tuple[torch.nn.Module, Callable]] = field(default_factory=list)
    """(module, hook) forward hooks registered while the stage trains, removed after (activation statistics)."""
    after_backward: list[Callable[[Accelerator], None]] = field(default_factory=list)
    """Called after each optimizer step's last backward, before clipping: gradient transforms (MIGU's mask).
    Gradients are already reduced over processes; the accelerator lets a hook reduce its own statistics."""
    after_step: list[Callable[[], None]] = field(default_factory=list)
    """Called after each optimizer step (a projection of the updated weights)."""
    groups: dict[str, list[torch.nn.Parameter]] = field(default_factory=dict)
    """What trains, in named groups: ``log.grad_norms`` reports each term's gradient per group."""


def _chunk_loss(
    model: torch.nn.Module,
    rows: list[Encoded],
    pad_id: int,
    seq2seq: bool,
    accelerator: Accelerator,
    cfg: TrainConfig,
    batch_penalties: dict[str, tuple[float, BatchPenalty]],
    use_keep: bool,
    share_prefix: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({term: detached value}, NLL + Σ λ·batch penalty) of one chunk of rows."""
    rows_batch = collate_train(rows, pad_id, seq2seq, share_prefix)
    batch = {key: v.to(accelerator.device) for key, v in rows_batch.items()}
    with autocast(accelerator.device, cfg.mixed_precision):  # the forwards (LwF's teacher too)
        logits, target = answer_logits(model, batch, seq2seq, use_keep)
        batch_terms = {name: fn(batch, logits, target).float() for name, (_, fn) in batch_penalties.items()}
    nll = LOSSES[cfg.loss_normalization](logits, target)
    loss = nll + sum(batch_penalties[name][0] * value for name, value in batch_terms.items())
    return {"nll": nll.detach(), **{name: v.detach() for name, v in batch_terms.items()}}, loss


def _first_bad_step(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """The first step whose loss was NaN or infinite (0: none yet), kept on the device: no sync per step."""
    return torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()), step, first_bad)


def _check_finite(first_bad: torch.Tensor, accelerator: Accelerator, desc: str, last_saved: int) -> None:
    """Raise if any process's loss diverged since the last check (a sync: at log and checkpoint steps only)."""
    if accelerator.num_processes > 1:
        first_bad = accelerator.reduce(first_bad, reduction="max")  # every process stops together
    bad = int(first_bad)
    if bad:
        last = f"the checkpoint of step {last_saved}" if last_saved else "the start of this task"
        raise TrainingDiverged(
            f"{desc}: the loss became NaN or infinite at step {bad}; nothing of this task after {last} was saved "
            "(re-running resumes from there): lower train.lr"
        )


def gradient_terms(
    groups: dict[str, list[torch.nn.Parameter]], penalties: dict[str, tuple[float, WeightPenalty]]
) -> dict[str, float]:
    """Split the step's accumulated gradient (before clipping) into its terms, per parameter group:
    each weight penalty's own gradient λ·∇penalty (one extra backward of that small term), and the rest
    (the task's NLL and any batch terms) as the difference. Returns ``grad/<group>/<term>`` norms and
    ``cos/<group>/<term>``, the cosine between the task's gradient and the term's."""
    out: dict[str, float] = {}
    for group, params in groups.items():
        task = [p.grad.detach().float().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        terms = {}
        for name, (weight, fn) in penalties.items():
            with torch.enable_grad():
                grads = torch.autograd.grad(weight * fn(), params, allow_unused=True)
            terms[name] = [torch.zeros_like(p) if g is None else g.float() for g, p in zip(grads, params, strict=True)]
            for t, g in zip(task, terms[name], strict=True):
                t.sub_(g)
        out[f"grad/{group}/nll"] = _norm(task)
        for name, grads in terms.items():
            out[f"grad/{group}/{name}"] = _norm(grads)
            dot = float(sum((t * g).sum() for t, g in zip(task, grads, strict=True)))
            denom = out[f"grad/{group}/nll"] * out[f"grad/{group}/{name}"]
            out[f"cos/{group}/{name}"] = dot / denom if denom > 0 else 0.0
    return out


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum(t.pow(2).sum() for t in tensors))) if tensors else 0.0


def _checkpoint_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(whole trainable weights by name, optimizer state) for a step checkpoint: gathered from the shards
    (keyed by parameter name) where the weights are sharded, as they are otherwise."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    weights = {name: gathered(p.detach()).cpu().contiguous() for name, p in trainable.items()}
    if any(is_shard(p) for p in trainable.values()):
        return weights, {"gathered": gathered_optimizer_state(model, optimizer)}
    return weights, optimizer.state_dict()


def train_task(
    model: torch.nn.Module,
    examples: list[Encoded],
    cfg: TrainConfig,
    *,
    seq2seq: bool,
    pad_id: int,
    seed: int,
    accelerator: Accelerator,
    hooks: TrainingHooks | None = None,
    log_path: Path | None = None,
    checkpoints: Checkpoints | None = None,
    on_log: Callable[[dict], None] | None = None,
    desc: str = "train",
    grad_norms: bool = False,
) -> TaskTraining:
    """Train the model's trainable parameters (the current task's adapter) on ``examples``.

    Loss per optimizer step = mean answer NLL + Σ λ·term over the ``hooks``' weight terms (added once
    per step) and batch terms (on each micro-batch). With ``grad_norms``, each logged row also gets the
    gradient norm of every term per group of ``hooks.groups`` (``grad/<group>/<term>``). With
    ``checkpoints``, a checkpoint is written every ``cfg.checkpoint_every`` steps and at the end, and an
    existing one is resumed from: the result is bit-identical to an uninterrupted run.
    """
    hooks = hooks or TrainingHooks()
    if cfg.batch_size % accelerator.num_processes:
        raise OloraError(
            f"train.batch_size={cfg.batch_size} must be a multiple of the {accelerator.num_processes} processes: "
            "every process needs its share of each micro-batch"
        )
    cfg = resolve_train_config(cfg, model.config, accelerator.device)
    penalties = {k: v for k, v in hooks.weight_terms.items() if v[0] > 0}
    batch_penalties = {k: v for k, v in hooks.batch_terms.items() if v[0] > 0}
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sharded = is_sharded(accelerator)
    if sharded:
        keep_whole(accelerator, adapter_modules(model) + shared_embeddings(model))
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    if sharded:  # fully_shard replaced the parameters by their shards
        params = trainable_parameters(model)
    main = accelerator.is_main_process
    torch.manual_seed(seed)  # dropout masks depend on (seed, task) only; a checkpoint restores its own state
    start_step = checkpoints.load(model, optimizer, accelerator.process_index) if checkpoints else 0
    windows = optimizer_windows([len(e.prompt_ids) + len(e.target_ids) for e in examples], cfg, seed)
    smallest = min((len(b) for w in windows for b in w), default=accelerator.num_processes)
    if smallest < accelerator.num_processes:
        raise OloraError(
            f"{desc}: a micro-batch of {smallest} examples cannot be shared by {accelerator.num_processes} processes "
            f"({len(examples)} examples, train.batch_size={cfg.batch_size}): change train.batch_size or the processes"
        )
    use_keep = not seq2seq and accepts_logits_to_keep(model)
    result = TaskTraining(steps=start_step)
    first_bad = torch.zeros((), dtype=torch.long, device=accelerator.device)
    last_saved = start_step
    if log_path and main:
        _trim_log(log_path, start_step) if start_step else log_path.unlink(missing_ok=True)
    log_file = open(log_path, "a", encoding="utf-8") if log_path and main else None
    bar = tqdm(total=len(windows), initial=start_step, desc=desc, disable=not main, dynamic_ncols=True)
    handles = [module.register_forward_hook(fn) for module, fn in hooks.forward_hooks]
    start = time.perf_counter()
    wrapped.train()
    try:
        for step, window in enumerate(windows[start_step:], start=start_step + 1):
            terms = {name: torch.zeros((), device=accelerator.device) for name in ["nll", *batch_penalties]}
            for group in optimizer.param_groups:  # a pure function of the step: nothing to checkpoint
                group["lr"] = cfg.lr * lr_multiplier(cfg.lr_schedule, step)
            pieces = (lockstep_pieces if sharded else step_pieces)(
                window, examples, cfg, accelerator.process_index, accelerator.num_processes
            )
            for i, (rows, share) in enumerate(pieces):
                last = i == len(pieces) - 1
                # DDP: gradients add up locally and are all-reduced once, at the step's last backward
                # (processes may cut their shares into different numbers of chunks).
                with contextlib.nullcontext() if last else accelerator.no_sync(wrapped):
                    # sharded: no shared prompt head, whose extra forward only some processes would run
                    chunk_terms, loss = _chunk_loss(
                        wrapped, rows, pad_id, seq2seq, accelerator, cfg, batch_penalties, use_keep, not sharded
                    )
                    loss = loss * share / len(window)
                    for name, value in chunk_terms.items():
                        terms[name] += value * share / len(window)
                    if last:  # weight-only penalties: once per optimizer step
                        for name, (weight, fn) in penalties.items():
                            value = fn()
                            terms[name] = value.detach()
                            loss = loss + weight * value
                    first_bad = _first_bad_step(first_bad, loss, step)
                    step_boundary(accelerator, last)
                    accelerator.backward(loss)
            if sharded:  # FSDP2 reduced the sharded gradients; the whole (adapter) ones are averaged here
                average_whole_gradients(params, accelerator.num_processes)
            logging = step % cfg.log_every == 0 or step == len(windows)
            for transform in hooks.after_backward:
                transform(accelerator)
            shares = gradient_terms(hooks.groups, penalties) if grad_norms and hooks.groups and logging else {}
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for after in hooks.after_step:
                after()
            result.steps = step
            bar.update(1)
            every = cfg.checkpoint_every
            saving = checkpoints is not None and ((every and step % every == 0) or step == len(windows))
            if logging or saving:
                _check_finite(first_bad, accelerator, desc, last_saved)
            if logging:
                row = {"step": step, **{name: value.item() for name, value in terms.items()}, **shares}
                weights = {
                    **{n: w for n, (w, _) in penalties.items()},
                    **{n: w for n, (w, _) in batch_penalties.items()},
                }
                row["loss"] = row["nll"] + sum(w * row[n] for n, w in weights.items())
                result.history.append(row)
                result.last_loss = row["loss"]
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if log_file:
                    log_file.write(json.dumps(row) + "\n")
                    log_file.flush()
                if on_log and main:
                    on_log(row)
            crash_point("train_step")
            if saving:
                # every process's RNG state: their dropout streams part once their shares differ in shape
                states = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
                if main or sharded:  # gathering sharded weights is a collective
                    weights, optimizer_state = _checkpoint_state(model, optimizer)
                if main:
                    checkpoints.save(weights, optimizer_state, step, states)
                last_saved = step
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
        if log_file:
            log_file.close()
        if sharded:
            reshard(model)
        accelerator.free_memory()
    result.wall_s = time.perf_counter() - start
    return result
