"""Continual-learning metrics as pure functions of the accuracy matrix.

``matrix[i][j]`` = accuracy (%) on task j after training task i, for j ≤ i (row i may be longer;
entries past i are ignored). T = number of rows.

* AA (average accuracy) = (1/T) Σ_j a[T-1][j]  — the paper's headline metric (macro over tasks).
* BWT (backward transfer) = (1/(T-1)) Σ_{j<T-1} (a[T-1][j] − a[j][j]); negative = forgetting.
* Forgetting = (1/(T-1)) Σ_{j<T-1} (max_{j≤k<T-1} a[k][j] − a[T-1][j]).
* FWT (Lopez-Paz & Ranzato 2017) = (1/(T-1)) Σ_{j≥1} (before_j − b_j): before_j = accuracy on task j
  after training task j-1 and before training task j, b_j = the untrained model's accuracy on task j.
  It needs evaluations the matrix does not hold (``eval.forward_transfer=true`` records them).

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


def forward_transfer(before: list[float | None], base: list[float]) -> float | None:
    """FWT from ``before[j]`` (task j's score before training it; ``before[0]`` is unused) and the
    untrained model's scores ``base[j]``."""
    t = len(before)
    if len(base) != t:
        raise ValueError(f"forward transfer needs {t} base scores, got {len(base)}")
    if t < 2:
        return None
    if any(before[j] is None for j in range(1, t)):
        raise ValueError("forward transfer needs every task's score before it was trained")
    return sum(before[j] - base[j] for j in range(1, t)) / (t - 1)


def chance_band(labels: int, n_test: int) -> float:
    """The highest accuracy (%) that guessing among ``labels`` classes reaches within two standard errors on
    ``n_test`` examples: 100·(p + 2·√(p(1−p)/n)), p = 1/labels."""
    p = 1 / labels
    return 100 * (p + 2 * (p * (1 - p) / n_test) ** 0.5)


def not_learned(matrix: Matrix, labels: list[int | None], n_test: list[int]) -> list[int]:
    """The tasks (column indices) whose accuracy right after training them (the diagonal) is within the
    chance band of their label set: the run measured nothing about them. Free-form tasks (labels None or
    0) and tasks without test examples are never flagged."""
    t = _check(matrix)
    return [j for j in range(t) if labels[j] and n_test[j] and matrix[j][j] <= chance_band(labels[j], n_test[j])]


def summarize(matrix: Matrix) -> dict[str, float | None]:
    return {"aa": average_accuracy(matrix), "bwt": backward_transfer(matrix), "forgetting": forgetting(matrix)}


# ----------------------------------------------------------------------------- over seeds

# Two-sided 95 % quantiles of Student's t for 1-10 degrees of freedom (no scipy dependency for ten numbers).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.4 / df  # within 1 % of the exact value for df > 10


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def seeds_needed(std: float, half_width: float, most: int = 999) -> int:
    """Fewest seeds n (≥ 2) whose 95 % t-interval half-width t(n−1)·std/√n is at most ``half_width``, taking the
    observed standard deviation of the paired differences as the true one (a planning estimate: that std is
    itself uncertain with few seeds). ``most`` when even that many would not do."""
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    n = 2
    while n < most and t95(n - 1) * std / n**0.5 > half_width:
        n += 1
    return n


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """Mean of a_s − b_s over seeds s and the half-width of its 95 % t-interval (None for one seed).

    Pairing by seed removes what both runs of a seed share (data sample, adapter init), so the
    interval is narrower than comparing two means."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired difference needs equal, non-empty lists (got {len(a)} and {len(b)})")
    mean, std = mean_std([x - y for x, y in zip(a, b, strict=True)])
    return mean, None if std is None else t95(len(a) - 1) * std / len(a) ** 0.5
