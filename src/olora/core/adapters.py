"""O-LoRA on stock PEFT: one LoRA adapter per task, all active, past ones frozen.

Every adapted linear layer computes (peft's convention: A = ``lora_A`` is r×in, B = ``lora_B`` is
out×r, s = alpha/r)

    h = W0·x + Σ_{i≤t} s_i · B_i · A_i · x

While task t trains only (A_t, B_t) receive gradients. The orthogonality penalty keeps the new
adapter's subspace away from the past ones (Wang et al. 2023, arXiv 2310.14152):

* ``orth="code"`` (the official code): Σ_layers Σ_jk |(A_past · A_tᵀ)_jk| with A_past = the past
  tasks' ``lora_A`` stacked by rows [r_past, in]. It constrains the *input* (row) space of ΔW.
* ``orth="paper"`` (the paper's formula): Σ_layers Σ_i ‖U_iᵀ U_t‖_F², where the paper's A (whose
  columns span U) is the output-side factor, i.e. peft's ``lora_B`` [out, r]. It constrains the
  *output* (column) space of ΔW. Stacking the past B's by columns gives the same sum in one product.

* ``orth="normalized"`` (olora's option, not the paper's): the mean over layers and new ``lora_A`` rows
  a of ‖Q_pastᵀ a‖² / ‖a‖², Q_past an orthonormal basis of the past rows: the share of each row's energy
  inside the past subspace, in [0, 1] whatever the width, rank, layer count or number of past tasks,
  and blind to the rows' scale (it steers their direction, never shrinks them).

The L2 term is Σ_layers ‖A_t‖_F + ‖B_t‖_F (not squared, as in the official code).

Layer pairs are found once per task by module type (peft's ``LoraLayer``), never by parameter name,
and grouped by shape so that each step's penalty is a few batched matrix products.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import PreTrainedModel

from olora.config import LoRAConfig
from olora.core.sharding import add_into
from olora.errors import OloraError


def adapter_name(index: int, task: str) -> str:
    """A PEFT adapter name for the ``index``-th task: ``t0_dbpedia`` (no dots, valid module key)."""
    return f"t{index}_" + re.sub(r"[^0-9A-Za-z_]", "_", task)


def default_target_modules(model: PreTrainedModel) -> list[str]:
    model_type = model.config.model_type
    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not targets:
        raise OloraError(
            f"no default LoRA target modules for model type {model_type!r}: "
            "set lora.target_modules=[...] to the attention projection names"
        )
    return list(targets)


def peft_lora_config(cfg: LoRAConfig, model: PreTrainedModel, seq2seq: bool) -> LoraConfig:
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules or default_target_modules(model),
        bias="none",
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
    )


def lora_layers(model: torch.nn.Module) -> list[LoraLayer]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def adapter_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every LoRA layer's adapter containers (``lora_A``, ``lora_B``: all adapters' factors), not the base layer."""
    return [factor for layer in lora_layers(model) for factor in (layer.lora_A, layer.lora_B)]


def factor_parameters(model: torch.nn.Module, name: str) -> dict[str, list[torch.nn.Parameter]]:
    """Adapter ``name``'s parameters by factor: {"lora_A": [...], "lora_B": [...]} (found by module type)."""
    layers = [layer for layer in lora_layers(model) if name in layer.lora_A]
    return {
        "lora_A": [layer.lora_A[name].weight for layer in layers],
        "lora_B": [layer.lora_B[name].weight for layer in layers],
    }


def add_adapter(model: PreTrainedModel | PeftModel, name: str, config: LoraConfig) -> PeftModel:
    """Add a fresh adapter (B = 0, so the model's output is unchanged) and return the PeftModel."""
    if not isinstance(model, PeftModel):
        try:
            return get_peft_model(model, config, adapter_name=name)
        except ValueError as exc:
            raise OloraError(f"cannot add LoRA adapters: {exc}; check lora.target_modules") from None
    model.add_adapter(name, config)
    return model


def activate(model: PeftModel, names: list[str], trainable: str | None) -> None:
    """Make ``names`` the active adapters; only ``trainable`` (if any) gets gradients.

    peft's multi-adapter ``set_adapter`` marks every active adapter trainable, so the past ones are
    frozen again here, and the base model stays frozen.
    """
    model.base_model.set_adapter(names)
    for param in model.parameters():
        param.requires_grad_(False)
    if trainable is None:
        return
    for layer in lora_layers(model):
        for factor in (layer.lora_A, layer.lora_B):
            if trainable in factor:
                factor[trainable].weight.requires_grad_(True)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@dataclass
class _Group:
    past: torch.Tensor  # [layers, r_past, d], constant during the task
    new: list[torch.nn.Parameter]  # layers × [r, d] (rows = the new adapter's basis vectors)
    transpose: bool  # True for lora_B, whose basis vectors are columns


class OrthogonalityPenalty:
    """λ1's term: overlap between the new adapter's subspace and the past adapters', per layer.

    Built once per task; calling it costs one batched matmul per distinct layer shape.
    """

    def __init__(self, model: torch.nn.Module, past: list[str], new: str, variant: str = "code"):
        if variant not in ("code", "paper", "normalized"):
            raise ValueError(f"olora.orth must be 'code', 'paper' or 'normalized', got {variant!r}")
        self.variant = variant
        factor = "lora_B" if variant == "paper" else "lora_A"
        groups: dict[tuple, list[tuple[torch.Tensor, torch.nn.Parameter]]] = defaultdict(list)
        for layer in lora_layers(model):
            mats = getattr(layer, factor)
            if new not in mats or not any(p in mats for p in past):
                continue
            # lora_A rows and lora_B columns are the r basis vectors; bring both to [r, d].
            orient = (lambda w: w.T) if variant == "paper" else (lambda w: w)
            past_rows = torch.cat([orient(mats[p].weight.detach()) for p in past if p in mats])
            if variant == "normalized":
                past_rows = orthonormal_rows(past_rows)
            new_weight = mats[new].weight
            groups[(tuple(past_rows.shape), tuple(new_weight.shape))].append((past_rows, new_weight))
        self.groups = [
            _Group(torch.stack([p for p, _ in pairs]), [n for _, n in pairs], variant == "paper")
            for pairs in groups.values()
        ]

    @property
    def num_layers(self) -> int:
        return sum(len(g.new) for g in self.groups)

    def __call__(self) -> torch.Tensor:
        total = None
        for g in self.groups:
            new = torch.stack(list(g.new))  # [layers, r, in] or [layers, out, r]
            if g.transpose:
                new = new.transpose(1, 2)
            overlap = torch.bmm(g.past, new.transpose(1, 2))  # [layers, r_past, r]
            if self.variant == "code":
                term = overlap.abs().sum()
            elif self.variant == "paper":
                term = overlap.pow(2).sum()
            else:  # share of each new row's energy inside the past span, summed; averaged below
                term = (overlap.pow(2).sum(1) / new.pow(2).sum(-1).clamp_min(1e-12)).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        if self.variant == "normalized":
            return total / sum(len(g.new) * g.new[0].shape[0] for g in self.groups)
        return total


def orthonormal_rows(rows: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the rows of ``rows`` [k, d] (reduced QR; min(k, d) rows)."""
    q, _ = torch.linalg.qr(rows.T.float())
    return q.T.to(rows.dtype)


@torch.no_grad()
def complement_init(model: torch.nn.Module, past: list[str], new: str) -> int:
    """Project each row a of the new adapter's ``lora_A`` onto the orthogonal complement of the past
    adapters' rows, a ← (a − QQᵀa)·‖a‖/‖a − QQᵀa‖, so the code penalty starts at zero and the row
    norms (peft's init scale) are kept. Layers whose past rows already span the input are left as they
    are. Returns the number of layers changed."""
    changed = 0
    for layer in lora_layers(model):
        mats = layer.lora_A
        rows = [mats[p].weight for p in past if p in mats]
        if new not in mats or not rows:
            continue
        past_rows = torch.cat(rows)
        if past_rows.shape[0] >= past_rows.shape[1]:
            continue
        q = orthonormal_rows(past_rows)  # [k, in]
        a = mats[new].weight
        rest = a - (a @ q.T) @ q
        a.copy_(rest * (a.norm(dim=1, keepdim=True) / rest.norm(dim=1, keepdim=True).clamp_min(1e-12)))
        changed += 1
    return changed


def update_l1(model: torch.nn.Module, name: str) -> torch.Tensor:
    """N-LoRA's term: Σ_layers ‖s·B·A‖_1, the l1 norm of adapter ``name``'s weight update ΔW."""
    norms = [
        (layer.scaling[name] * (layer.lora_B[name].weight @ layer.lora_A[name].weight)).abs().sum()
        for layer in lora_layers(model)
        if name in layer.lora_A
    ]
    return torch.stack(norms).sum()


def l2_norm(model: torch.nn.Module, name: str) -> torch.Tensor:
    """λ2's term: Σ_layers ‖A_new‖_F + ‖B_new‖_F (Frobenius, not squared, as the official code)."""
    norms = [
        factor[name].weight.norm()
        for layer in lora_layers(model)
        for factor in (layer.lora_A, layer.lora_B)
        if name in factor
    ]
    return torch.stack(norms).sum()


@torch.no_grad()
def merge_into_base(model: torch.nn.Module, name: str) -> None:
    """W0 += s·B·A for adapter ``name`` in every layer (the paper's "past LoRAs can be merged").

    Done by hand rather than with peft's ``merge``: a peft layer with a merged adapter skips every
    LoRA branch in its forward, including the one being trained. Only into float32 weights: a bf16
    weight keeps 8 bits of mantissa, so an update ~1e-3 of the weight's size loses most of its bits.
    """
    for layer in lora_layers(model):
        if name in layer.lora_A:
            weight = layer.get_base_layer().weight
            if weight.dtype != torch.float32:
                raise OloraError(f"merging adapter {name!r} into {weight.dtype} weights would lose precision")
            delta = layer.lora_B[name].weight @ layer.lora_A[name].weight * layer.scaling[name]
            add_into(weight, delta.T if getattr(layer, "fan_in_fan_out", False) else delta)  # a shard: its rows


class SharedDropout(torch.nn.Dropout):
    """One dropout mask for every adapter of a layer within one forward (the official code's
    behaviour: old and new LoRA branches read the same ``dropout(x)``).

    peft calls each active adapter's dropout on the layer input, cast to that adapter's dtype (a new
    tensor when the dtypes differ). The first call samples a mask for the input's shape and the
    following calls of the same forward apply that mask to whatever they get, so the branches share it
    whatever their dtypes (keying on the input tensor itself once lost the sharing in bf16 runs). The
    mask is cleared after the layer's forward (a hook), so none outlives it. The mask is drawn as
    ``F.dropout`` draws it for a float32 input (same random numbers, same values).
    """

    def __init__(self, p: float):
        super().__init__(p)
        self._mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self._mask is None or self._mask.shape != x.shape:
            ones = torch.ones(x.shape, dtype=torch.float32, device=x.device)
            self._mask = torch.nn.functional.dropout(ones, self.p, training=True)  # 0 or 1/(1-p)
        return x * self._mask.to(x.dtype)

    def clear(self, *_: object) -> None:
        self._mask = None


def set_past_dropout(model: torch.nn.Module, past: list[str], new: str, mode: str) -> None:
    """Dropout of the past adapters while ``new`` trains: 'off' (identity) or 'shared' with ``new``."""
    for layer in lora_layers(model):
        if new not in layer.lora_dropout:
            continue
        old_hook = getattr(layer, "_olora_dropout_hook", None)
        if old_hook is not None:
            old_hook.remove()
            layer._olora_dropout_hook = None
        if mode == "shared":
            current = layer.lora_dropout[new]
            shared = SharedDropout(current.p if isinstance(current, torch.nn.Dropout) else 0.0)
            layer.lora_dropout[new] = shared
            layer._olora_dropout_hook = layer.register_forward_hook(shared.clear)
        for name in past:
            if name in layer.lora_dropout:
                layer.lora_dropout[name] = layer.lora_dropout[new] if mode == "shared" else torch.nn.Identity()


@torch.no_grad()
def copy_adapter_weights(model: torch.nn.Module, source: str, target: str) -> None:
    """target's A and B := source's (LwF keeps the pre-task adapter as a frozen teacher)."""
    for layer in lora_layers(model):
        if source in layer.lora_A and target in layer.lora_A:
            layer.lora_A[target].weight.copy_(layer.lora_A[source].weight)
            layer.lora_B[target].weight.copy_(layer.lora_B[source].weight)


def concat_adapters(model: PeftModel, names: list[str], new_name: str) -> None:
    """Add adapter ``new_name`` equal to the sum of ``names``: peft's ``cat`` combination (rank Σr_i,
    A stacked by rows with each task's scaling folded in, B stacked by columns, alpha = rank).

    Σ_i s_i B_i A_i = [B_1 | … | B_T] · [s_1 A_1; …; s_T A_T], so outputs match all-active exactly
    (tests/test_adapters.py::test_all_active_equals_concatenated_adapter).

    peft builds the combined adapter in the base weights' dtype, so in a bf16 model it rounded the past
    adapters to bf16 (and their dropout input differed from the float32 new adapter's); the stacked
    factors are written again here in the task adapters' own dtype.
    """
    model.add_weighted_adapter(names, [1.0] * len(names), new_name, combination_type="cat")
    with torch.no_grad():
        for layer in lora_layers(model):
            if new_name not in layer.lora_A:
                continue
            parts = [n for n in names if n in layer.lora_A]
            dtype = layer.lora_A[parts[0]].weight.dtype
            stacked_a = torch.cat([layer.lora_A[n].weight * layer.scaling[n] for n in parts], dim=0)
            stacked_b = torch.cat([layer.lora_B[n].weight for n in parts], dim=1)
            layer.lora_A[new_name].to(dtype).weight.copy_(stacked_a)
            layer.lora_B[new_name].to(dtype).weight.copy_(stacked_b)
