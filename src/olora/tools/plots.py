"""Figures of a run, drawn with matplotlib (Agg backend, no display needed), saved as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _square(matrix: list[list[float]], size: int) -> list[list[float]]:
    nan = float("nan")
    return [row[: i + 1] + [nan] * (size - i - 1) for i, row in enumerate(matrix)] + [
        [nan] * size for _ in range(size - len(matrix))
    ]


def heatmap(
    matrix: list[list[float]],
    rows: list[str],
    cols: list[str],
    title: str,
    path: Path,
    vmax: float = 100.0,
    fmt: str = "{:.1f}",
    cmap: str = "viridis",
) -> None:
    size = max(4, 0.9 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.8))
    image = ax.imshow(matrix, vmin=0, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                color = "white" if value < 0.6 * vmax else "black"
                ax.text(j, i, fmt.format(value), ha="center", va="center", color=color, fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_heatmap(results: dict, path: Path) -> None:
    tasks = results["tasks"]
    heatmap(
        _square(results["matrix"], len(tasks)),
        [f"after {t}" for t in tasks],
        tasks,
        f"{results['method']}: accuracy (%) on each task after each task",
        path,
    )


def accuracy_curves(runs: list[dict], path: Path) -> None:
    """One run: each task's accuracy across the sequence. Several: average seen-task accuracy."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(runs) == 1:
        res = runs[0]
        for j, task in enumerate(res["tasks"]):
            xs = list(range(j, len(res["matrix"])))
            ax.plot(xs, [res["matrix"][i][j] for i in xs], marker="o", label=task)
        ax.set_ylabel("accuracy (%)")
    else:
        for res in runs:
            avg = [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(res["matrix"])]
            ax.plot(range(len(avg)), avg, marker="o", label=_label(res))
        ax.set_ylabel("mean accuracy on seen tasks (%)")
    tasks = runs[0]["tasks"]
    ax.set_xticks(range(len(tasks)), [f"after {t}" for t in tasks], rotation=30, ha="right")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(res: dict) -> str:
    return f"{res['method']} (seed {res['seed']})"


def loss_curves(logs: dict[str, list[dict]], path: Path) -> list[str]:
    """One panel per loss term (nll, orth, l2, ...), one line per task; returns the terms drawn."""
    terms = [t for t in ("nll", "orth", "l2", "ewc", "lwf") if any(t in r for rows in logs.values() for r in rows)]
    if not terms:
        return []
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for k, (task, rows) in enumerate(logs.items()):
            points = [(r["step"], r[term]) for r in rows if term in r]
            if points:  # one colour per task in every panel
                ax.plot(*zip(*points, strict=True), label=task, color=f"C{k % 10}")
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{k % 10}", label=task) for k, task in enumerate(logs)]
    axes[0][-1].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return terms


def subspace_heatmap(report: dict, side: str, path: Path) -> None:
    names = report["tasks"]
    label = "input side (lora_A)" if side == "input" else "output side (lora_B)"
    heatmap(
        report[side]["mean_overlap"],
        names,
        names,
        f"subspace overlap, {label}\n‖A_i A_jᵀ‖ / (‖A_i‖ ‖A_j‖)",
        path,
        vmax=1.0,
        fmt="{:.3f}",
        cmap="magma",
    )


def grid_scatter(points: list[dict], x: str, y: str, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """One point per grid cell (method and order) at the mean over seeds, with ± one standard deviation as
    error bars; ``points`` hold ``label``, ``order`` and the mean and std of ``x`` and ``y``. One colour per
    method (20 distinct: a 14-column grid repeated the default 10), one marker per order."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    orders = sorted({p["order"] for p in points})
    cmap = plt.get_cmap("tab20")
    colour = {label: cmap(i % 20) for i, label in enumerate(dict.fromkeys(p["label"] for p in points))}
    markers = "osD^v"
    for p in points:
        marker = markers[orders.index(p["order"]) % len(markers)]
        ax.errorbar(
            p[x], p[y], xerr=p[f"{x}_std"] or 0, yerr=p[f"{y}_std"] or 0, fmt=marker,
            color=colour[p["label"]],
            capsize=3, label=f"{p['label']} (order {p['order']})" if len(orders) > 1 else p["label"],
        )  # fmt: skip
        ax.annotate(p["label"], (p[x], p[y]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
