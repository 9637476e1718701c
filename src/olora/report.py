"""Plain-text views of a run's accuracy matrix, for the terminal."""

from __future__ import annotations


def _fmt(x: float | None, width: int = 7) -> str:
    return f"{'n/a':>{width}}" if x is None else f"{x:{width}.1f}"


def format_matrix(tasks: list[str], matrix: list[list[float]]) -> str:
    """Row i = accuracies after training task i, on tasks 0..i."""
    width = max(7, *(len(t) + 1 for t in tasks))
    lines = ["after \\ on".ljust(14) + "".join(t.rjust(width) for t in tasks)]
    for i, row in enumerate(matrix):
        cells = "".join(_fmt(x, width) for x in row[: i + 1])
        lines.append(tasks[i][:13].ljust(14) + cells)
    return "\n".join(lines)


def format_summary(results: dict) -> str:
    return (
        f"AA {_fmt(results['aa'], 0).strip()}  BWT {_fmt(results['bwt'], 0).strip()}  "
        f"forgetting {_fmt(results['forgetting'], 0).strip()}"
    )


def side_by_side(runs: list[dict]) -> str:
    """Each run's matrix and AA/BWT, one block per method."""
    blocks = []
    for res in runs:
        blocks.append(
            f"== {res['method']} ({res['model']}) ==\n"
            f"{format_matrix(res['tasks'], res['matrix'])}\n{format_summary(res)}"
        )
    header = f"{'method':<10}{'AA':>8}{'BWT':>8}{'forget':>8}"
    rows = [f"{r['method']:<10}{_fmt(r['aa'], 8)}{_fmt(r['bwt'], 8)}{_fmt(r['forgetting'], 8)}" for r in runs]
    return "\n\n".join(blocks) + "\n\n" + "\n".join([header, *rows])
