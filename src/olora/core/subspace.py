"""Subspace diagnostics: did the task adapters really stay orthogonal?

For two tasks i, j and one adapted layer, with A_i ∈ R^{r×d} (rows = basis vectors; PEFT ``lora_A``
for the input side, ``lora_Bᵀ`` for the output side):

* overlap(i, j) = ‖A_i A_jᵀ‖_F / (‖A_i‖_F ‖A_j‖_F) ∈ [0, 1]: 0 = orthogonal subspaces;
* principal angles: cos θ_k = singular values of Q_iᵀ Q_j with Q orthonormal bases of the row
  spaces; we report the largest cosine (1 = the subspaces share a direction).

Both are computed from the saved adapters alone, so any finished run can be inspected.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def _factor_rows(state: dict[str, torch.Tensor], side: str) -> dict[str, torch.Tensor]:
    """{layer key: [r, d]} basis rows of each adapted layer (A for 'input', Bᵀ for 'output')."""
    suffix = ".lora_A.weight" if side == "input" else ".lora_B.weight"
    rows = {}
    for key, w in state.items():
        if key.endswith(suffix):
            w = w.double()
            rows[key[: -len(suffix)]] = w if side == "input" else w.T
    return rows


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = a.norm() * b.norm()
    return float((a @ b.T).norm() / denom) if denom > 0 else 0.0


def max_principal_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    qa, _ = torch.linalg.qr(a.T)  # [d, r]: orthonormal basis of a's row space
    qb, _ = torch.linalg.qr(b.T)
    return float(torch.linalg.svdvals(qa.T @ qb).max().clamp(max=1.0))


def subspace_report(adapter_dirs: list[Path], names: list[str]) -> dict:
    """Per side ('input', 'output'): T×T mean overlap and max principal cosine over layers, plus
    the per-layer overlap of every task pair."""
    states = [load_file(str(d / "adapter_model.safetensors")) for d in adapter_dirs]
    report: dict = {"tasks": names}
    for side in ("input", "output"):
        rows = [_factor_rows(s, side) for s in states]
        layers = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
        t = len(rows)
        mean_overlap = [[0.0] * t for _ in range(t)]
        mean_cos = [[0.0] * t for _ in range(t)]
        per_layer = {}
        for i in range(t):
            for j in range(t):
                if not layers:
                    continue
                ov = [overlap(rows[i][k], rows[j][k]) for k in layers]
                cs = [max_principal_cosine(rows[i][k], rows[j][k]) for k in layers]
                mean_overlap[i][j] = sum(ov) / len(ov)
                mean_cos[i][j] = sum(cs) / len(cs)
                if i < j:
                    per_layer[f"{names[i]}|{names[j]}"] = [round(x, 5) for x in ov]
        report[side] = {
            "mean_overlap": [[round(x, 5) for x in r] for r in mean_overlap],
            "mean_max_principal_cosine": [[round(x, 5) for x in r] for r in mean_cos],
            "per_layer_overlap": per_layer,
            "layers": [k.replace("base_model.model.", "") for k in layers],
        }
    return report
