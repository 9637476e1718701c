"""Why O-LoRA learns new tasks less: read runs made with ``log.grad_norms=true train.log_every=1``.

    python scripts/plasticity.py RUN_DIR [RUN_DIR ...] --out docs/images/plasticity
    python scripts/plasticity.py --grid BENCH_OUT     (accuracy right after learning, over seeds)

For each run (one per variant: the code / paper / normalized penalty, complement init, another λ) it
prints one Markdown row: AA, BWT, the mean accuracy on each task right after learning it (plasticity:
the matrix's diagonal, tasks 2..T), and, per task t ≥ 2, the median over its steps of
‖λ∇_A penalty‖ / ‖∇_A NLL‖ on the new adapter's lora_A (how much of lora_A's gradient the penalty is),
its value at the first step, and the median cosine between the two (on lora_B for the paper variant,
whose penalty reads lora_B). It draws the ratio per step for
every run and task (``<out>_ratio.png``) and plasticity against BWT (``<out>_tradeoff.png``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from olora.store.rundir import RunFolder  # noqa: E402

PENALTIES = ("orth", "l1", "l2")


def penalty_of(row: dict) -> str | None:
    return next((p for p in PENALTIES if f"grad/lora_A/{p}" in row), None)


def factor_of(rows: list[dict]) -> str:
    """The factor the penalty acts on: lora_A (code, normalized, N-LoRA) or lora_B (the paper variant)."""
    name = next((penalty_of(r) for r in rows if penalty_of(r)), None)
    if name is None:
        return "lora_A"
    on_a = sum(r.get(f"grad/lora_A/{name}", 0.0) for r in rows)
    return "lora_A" if on_a > 0 else "lora_B"


def ratios(rows: list[dict], factor: str = "lora_A") -> list[float]:
    """‖λ∇ penalty‖ / ‖∇ NLL‖ on ``factor`` per logged step (inf where the task's gradient is zero)."""
    out = []
    for row in rows:
        name = penalty_of(row)
        if name is None:
            continue
        nll, pen = row[f"grad/{factor}/nll"], row[f"grad/{factor}/{name}"]
        out.append(pen / nll if nll > 0 else float("inf"))
    return out


def summarize(path: Path) -> dict:
    folder = RunFolder(path)
    results = folder.load_results()
    matrix = results["matrix"]
    logs = folder.train_logs()
    per_task = {}
    for label, rows in list(logs.items())[1:]:
        factor = factor_of(rows)
        r = ratios(rows, factor)
        cosines = [row[f"cos/{factor}/{penalty_of(row)}"] for row in rows if penalty_of(row)]
        finite = [x for x in r if x != float("inf")]
        per_task[label] = {
            "median_ratio": statistics.median(finite) if finite else None,
            "first_ratio": r[0] if r else None,
            "median_cos": statistics.median(cosines) if cosines else None,
            "ratios": r,
            "factor": factor,
        }
    diagonal = [matrix[i][i] for i in range(1, len(matrix))]
    return {
        "name": path.name,
        "aa": results["aa"],
        "bwt": results["bwt"],
        "plasticity": sum(diagonal) / len(diagonal),
        "last": matrix[-1][-1],
        "tasks": per_task,
    }


def _fmt(x: float | None, spec: str = ".2g") -> str:
    if x is None:
        return "n/a"
    return "∞" if x == float("inf") else format(x, spec)


def table(runs: list[dict]) -> str:
    labels = list(runs[0]["tasks"])
    head = ["run", "AA", "BWT", "learned (diag. 2..T)", "last task"]
    head += [f"ratio t={i + 2} ({label}): median / first / cos" for i, label in enumerate(labels)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [r["name"], f"{r['aa']:.1f}", f"{r['bwt']:+.1f}", f"{r['plasticity']:.1f}", f"{r['last']:.1f}"]
        for label in labels:
            t = r["tasks"].get(label)
            if not t or t["median_ratio"] is None and t["first_ratio"] is None:
                cells.append("no penalty")
            else:
                on = "" if t["factor"] == "lora_A" else " (on B)"
                ratio = f"{_fmt(t['median_ratio'])} / {_fmt(t['first_ratio'])} / {_fmt(t['median_cos'], '+.2f')}"
                cells.append(ratio + on)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(runs: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = list(runs[0]["tasks"])
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.4), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        for r in runs:
            ratio = r["tasks"].get(label, {}).get("ratios", [])  # one per step (log_every=1)
            points = [(step, x) for step, x in enumerate(ratio, start=1) if 0 < x < float("inf")]
            if points:
                ax.plot(*zip(*points, strict=True), label=r["name"])
        ax.set_yscale("log")
        ax.set_title(f"{label}: ‖λ∇ penalty‖ / ‖∇ NLL‖ (lora_A; paper: lora_B)", fontsize=9)
        ax.set_xlabel("optimizer step (step 1: ∞ for lora_A, 0 for lora_B)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_name(out.name + "_ratio.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for r in runs:
        ax.scatter(r["bwt"], r["plasticity"])
        ax.annotate(r["name"], (r["bwt"], r["plasticity"]), fontsize=7)
    ax.set_xlabel("BWT (stability →)")
    ax.set_ylabel("accuracy right after learning, tasks 2..T")
    fig.tight_layout()
    fig.savefig(out.with_name(out.name + "_tradeoff.png"), dpi=110)
    plt.close(fig)


def grid_plasticity(grid: Path, reference: str = "olora") -> str:
    """From an ``olora bench`` folder: per order and method, the accuracy right after learning each task
    (mean diagonal, tasks 2..T) as mean ± std over seeds, and ``reference − method`` paired by seed with
    its 95 % interval."""
    from olora.core.metrics import mean_std, paired_difference

    cells: dict[tuple[str, str], dict[int, float]] = {}
    for path in sorted(grid.glob("*-order*/*/seed*/results.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        m = res["matrix"]
        if res["method"].startswith("mtl"):
            continue  # one stage: no "right after learning task j"
        learned = sum(m[i][i] for i in range(1, len(m))) / (len(m) - 1)
        cells.setdefault((str(res["config"]["order"]), res["method"]), {})[res["config"]["seed"]] = learned
    lines = [
        "| order | method | seeds | learned (mean ± std) | " + reference + " − method (95 % CI) |",
        "|---|---|---|---|---|",
    ]
    for (order, method), by_seed in sorted(cells.items()):
        mean, std = mean_std(list(by_seed.values()))
        diff = ""
        ref = cells.get((order, reference), {})
        seeds = sorted(set(ref) & set(by_seed))
        if method != reference and seeds:
            d, half = paired_difference([ref[k] for k in seeds], [by_seed[k] for k in seeds])
            diff = f"{d:+.1f}" + ("" if half is None else f" ± {half:.1f}")
        spread = "" if std is None else f" ± {std:.1f}"
        lines.append(f"| {order} | {method} | {len(by_seed)} | {mean:.1f}{spread} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--grid", type=Path, help="an `olora bench --out` folder: plasticity per method over seeds")
    p.add_argument("--out", type=Path, default=Path("plasticity"), help="prefix of the two PNG files")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.grid:
        print(grid_plasticity(args.grid))
    if not args.runs:
        return 0
    runs = [summarize(path) for path in args.runs]
    print(table(runs))
    figures(runs, args.out)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
