"""Continual-learning metrics as pure functions of the accuracy matrix.

``matrix[i][j]`` = accuracy (%) on task j after training task i, for j ≤ i (row i may be longer;
entries past i are ignored). T = number of rows.

* AA (average accuracy) = (1/T) Σ_j a[T-1][j]  — the paper's headline metric (macro over tasks).
* BWT (backward transfer) = (1/(T-1)) Σ_{j<T-1} (a[T-1][j] − a[j][j]); negative = forgetting.
* Forgetting = (1/(T-1)) Σ_{j<T-1} (max_{j≤k<T-1} a[k][j] − a[T-1][j]).
* FWT (needs reference scores r_j, e.g. each task trained alone) = (1/(T-1)) Σ_{j≥1} (a[j][j] − r_j).

Metrics that need two tasks return None for a one-task matrix.
"""

from __future__ import annotations

Matrix = list[list[float]]


def _check(matrix: Matrix) -> int:
    if not matrix:
        raise ValueError("the accuracy matrix is empty")
    for i, row in enumerate(matrix):
        if len(row) < i + 1:
            raise ValueError(f"row {i} of the accuracy matrix needs {i + 1} entries, has {len(row)}")
    return len(matrix)


def average_accuracy(matrix: Matrix) -> float:
    t = _check(matrix)
    return sum(matrix[t - 1][:t]) / t


def backward_transfer(matrix: Matrix) -> float | None:
    t = _check(matrix)
    if t < 2:
        return None
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forgetting(matrix: Matrix) -> float | None:
    t = _check(matrix)
    if t < 2:
        return None
    drops = [max(matrix[k][j] for k in range(j, t - 1)) - matrix[t - 1][j] for j in range(t - 1)]
    return sum(drops) / (t - 1)


def forward_transfer(matrix: Matrix, reference: list[float]) -> float | None:
    t = _check(matrix)
    if len(reference) < t:
        raise ValueError(f"forward transfer needs {t} reference scores, got {len(reference)}")
    if t < 2:
        return None
    return sum(matrix[j][j] - reference[j] for j in range(1, t)) / (t - 1)


def summarize(matrix: Matrix, reference: list[float] | None = None) -> dict[str, float | None]:
    out = {"aa": average_accuracy(matrix), "bwt": backward_transfer(matrix), "forgetting": forgetting(matrix)}
    if reference is not None:
        out["fwt"] = forward_transfer(matrix, reference)
    return out
