"""InfLoRA (Liang & Li, CVPR 2024, arXiv 2404.00228; its language-model form in the GainLoRA code,
Liang et al., NeurIPS 2025): each task's ``lora_A`` is fixed, outside the span of the earlier tasks'
layer inputs, and only ``lora_B`` trains; no penalty, no λ.

Per adapted layer, with M [d, k] an orthonormal basis of the inputs x ∈ R^d the layer saw in past tasks:

* before task t: A_t ← A_t − A_t·M·Mᵀ (peft's random init projected off the span), each row rescaled to
  norm 1/√3 (the norm of a Kaiming-uniform row, which a projection shrinks; task 1 keeps its init);
  A_t is frozen. Then ΔW_t·x = s·B_t·A_t·x = 0 for every x in span(M), whatever B_t learns: the new
  task cannot change the layer's output on the old tasks' inputs, up to the energy M leaves out.
* after task t: C = mean over every token the layer saw of x·xᵀ (the task's training prompts and answers,
  padding left out, no shared prompt head, so each token counts once); the basis
  grows as in GPM (Saha et al., ICLR 2021): with energy = the eigenvalues of C (the squared singular
  values of the inputs), keep M and add the top eigenvectors of the residual (I−MMᵀ)·C·(I−MMᵀ) until
  M holds a share ε_t of C's energy, ε_t = ε + (1−ε)·min(t, T)/T rising towards 1 (ε =
  ``inflora.threshold``, T = ``inflora.horizon``; GainLoRA: 0.995 and 15).

Differences from the GainLoRA code, each for a reason: it sums the *squares* of C's eigenvalues (GPM and
the paper use the eigenvalues), it counts padding tokens, and in T5's cross-attention it projects v's
``lora_A`` with the decoder's statistics although v reads the encoder's output; here every layer keeps
the basis of its own inputs. The past adapters stay in the forward pass and all are summed at inference.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

import torch

from olora.config import check, register_options
from olora.core.adapters import lora_layers
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.data.encoding import IGNORE, Encoded, collate_train
from olora.errors import OloraError
from olora.methods.base import Stage, Tuned
from olora.methods.registry import register
from olora.methods.units import TaskAdapters
from olora.seeding import derive_seed

log = logging.getLogger(__name__)


@register_options("inflora")
@dataclass
class InfLoRAOptions:
    threshold: float = field(
        default=0.97,
        metadata={
            "help": "ε: the share of the past inputs' energy (eigenvalues of their covariance) the protected "
            "basis must hold after the first task; it rises towards 1 over inflora.horizon tasks. Higher "
            "protects old tasks more and leaves new ones fewer directions."
        },
    )
    horizon: int = field(default=15, metadata={"help": "T: the task count over which ε_t rises to 1 (GainLoRA: 15)."})
    max_examples: int = field(
        default=1000,
        metadata={"help": "Training examples whose layer inputs estimate a task's covariance (a seeded sample)."},
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, 0 < self.threshold < 1, f"{prefix}threshold", self.threshold, "must be in (0, 1)")
        check(errors, self.horizon >= 1, f"{prefix}horizon", self.horizon, "must be >= 1")
        check(errors, self.max_examples >= 1, f"{prefix}max_examples", self.max_examples, "must be >= 1")
        return errors

    def energy_share(self, task_index: int) -> float:
        """ε_t after task ``task_index`` (0-based)."""
        return self.threshold + (1 - self.threshold) * min(task_index, self.horizon) / self.horizon


@register("inflora")
class InfLoRA(TaskAdapters):
    """InfLoRA (Liang & Li, CVPR 2024): lora_A fixed outside the past tasks' input span, only lora_B trains."""

    tuned = Tuned("inflora.threshold", values=(0.9, 0.97, 0.995))

    sections = ("inflora",)

    def __init__(self, options: dict) -> None:
        super().__init__(options)
        self.basis: dict[str, torch.Tensor] = {}  # layer name -> M [d, k], orthonormal columns

    def adopt_export(self, ctx: RunContext, folder: str, n_tasks: int) -> None:
        raise OloraError(
            "method=inflora cannot start from an exported adapter: an export does not carry the input basis of its "
            "tasks; grow the run itself (olora run with its config and more tasks)"
        )

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        name = self.adapter(stage)
        if stage.index > 0:
            project_off(ctx.model, name, self.basis)
        for layer in lora_layers(ctx.model):
            if name in layer.lora_A:
                layer.lora_A[name].weight.requires_grad_(False)
        hooks.groups.pop("lora_A", None)
        return hooks

    def end_training(self, ctx: RunContext, stage: Stage) -> None:
        super().end_training(ctx, stage)
        examples = [ex for t in stage.train_tasks for ex in ctx.train_sets[t.name]]
        rng = random.Random(derive_seed(ctx.cfg.seed, "inflora", stage.index))
        chosen = rng.sample(examples, min(self.inflora.max_examples, len(examples)))
        self.prepare_eval(ctx, stage, stage.index)  # every task adapter in the forward, no dropout
        batch = ctx.cfg.train.batch_size  # a forward without gradients: what training holds, and less
        covariances, _ = input_covariances(ctx.model, chosen, ctx.pad_id, ctx.seq2seq, ctx.device, batch)
        share = self.inflora.energy_share(stage.index)
        for layer_name, cov in covariances.items():
            self.basis[layer_name] = grow_basis(self.basis.get(layer_name), cov, share)
        sizes = [m.shape[1] for m in self.basis.values()]
        log.info(
            "inflora: after %s the protected input basis holds %.1f of %d dimensions per layer (min %d, max %d)",
            stage.label,
            sum(sizes) / len(sizes),
            next(iter(self.basis.values())).shape[0],
            min(sizes),
            max(sizes),
        )

    def stage_report(self, ctx: RunContext, stage: Stage) -> dict:
        """The basis size k per layer (and the input width d) after this stage."""
        return {
            "energy_share": self.inflora.energy_share(stage.index),
            "basis_size": {name: m.shape[1] for name, m in self.basis.items()},
            "input_dim": {name: m.shape[0] for name, m in self.basis.items()},
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"basis.{name}": m for name, m in self.basis.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.basis = {k.removeprefix("basis."): v for k, v in state.items() if k.startswith("basis.")}


@torch.no_grad()
def project_off(model: torch.nn.Module, adapter: str, basis: dict[str, torch.Tensor]) -> None:
    """A ← A − A·M·Mᵀ for ``adapter``'s ``lora_A`` in every layer with a basis, rows rescaled to 1/√3."""
    for name, layer in model.named_modules():
        if name not in basis or adapter not in getattr(layer, "lora_A", {}):
            continue
        a = layer.lora_A[adapter].weight  # [r, d]
        m = basis[name].to(a.device, torch.float32)
        rows = a.float() - (a.float() @ m) @ m.T
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12) / math.sqrt(3)
        a.copy_(rows.to(a.dtype))


@torch.no_grad()
def input_covariances(
    model: torch.nn.Module,
    examples: list[Encoded],
    pad_id: int,
    seq2seq: bool,
    device: torch.device,
    batch_size: int = 8,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """({layer name: mean x·xᵀ over its input tokens}, {layer name: tokens counted}) for every adapted layer.

    Every token a layer sees counts once and padding never counts: examples run ``batch_size`` at a time
    (sorted by length, so little is padded; on SmolLM2 and the cpu_forgetting benchmark 42 s a task at 8
    rows, 62-70 s one at a time), no prompt head is shared between rows, and a layer keeps the rows of its
    input that are real tokens. Which mask applies is told by the input's length: a decoder-only layer and a T5
    encoder layer (and cross-attention k/v, which read the encoder's output) see the prompt, a T5 decoder
    layer the answer, and the answers are padded one longer whenever both lengths would tie.
    """
    adapted = set(lora_layers(model))
    layers = {name: m for name, m in model.named_modules() if m in adapted}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(layers, 0)
    real: dict[int, torch.Tensor] = {}  # padded length -> [rows, length] mask of real tokens, this batch

    def hook(name: str):
        def add(module: torch.nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if x.dim() != 3 or x.shape[1] not in real:
                raise RuntimeError(f"inflora: {name} got an input of shape {tuple(x.shape)}, no token mask fits it")
            x = x.reshape(-1, x.shape[-1])[real[x.shape[1]].reshape(-1)].float()
            sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x
            counts[name] += x.shape[0]

        return add

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    ordered = sorted(examples, key=lambda e: (len(e.prompt_ids), len(e.target_ids)))
    try:
        for start in range(0, len(ordered), batch_size):
            batch = collate_train(ordered[start : start + batch_size], pad_id, seq2seq, share_prefix=False)
            real.clear()
            if seq2seq:  # T5 derives its decoder inputs from the labels; lengths must tell the masks apart
                if batch["labels"].shape[1] == batch["input_ids"].shape[1]:
                    batch["labels"] = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE)
                real[batch["labels"].shape[1]] = (batch["labels"] != IGNORE).to(device)
            else:
                batch.pop("labels")  # no loss needed
            real[batch["input_ids"].shape[1]] = batch["attention_mask"].bool().to(device)
            model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: sums[name] / counts[name] for name in sums}, counts


def grow_basis(basis: torch.Tensor | None, cov: torch.Tensor, share: float) -> torch.Tensor:
    """GPM's update: M and enough top eigenvectors of the residual covariance (I−MMᵀ)C(I−MMᵀ) that M holds
    ``share`` of C's energy (the sum of its eigenvalues). Returns M' [d, k'] with orthonormal columns."""
    d = cov.shape[0]
    cov = cov.double()
    total = torch.trace(cov).clamp_min(1e-30)
    if basis is None:
        basis = torch.zeros(d, 0, dtype=torch.float64, device=cov.device)
    basis = basis.to(cov.device, torch.float64)
    rest = cov - basis @ (basis.T @ cov)
    rest = rest - (rest @ basis) @ basis.T  # (I−P)·C·(I−P)
    held = (total - torch.trace(rest)) / total
    values, vectors = torch.linalg.eigh((rest + rest.T) / 2)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    add = 0
    while held < share and add < d - basis.shape[1]:
        held = held + values[add] / total
        add += 1
    if add == 0:
        return basis.float()
    grown = torch.cat([basis, vectors[:, :add]], dim=1)
    q, _ = torch.linalg.qr(grown)  # re-orthonormalise against rounding
    return q.float()
