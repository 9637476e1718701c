"""Why O-LoRA learns new tasks less: read runs made with ``log.grad_norms=true train.log_every=1``.

    python scripts/plasticity.py RUN_DIR [RUN_DIR ...] --out docs/images/plasticity

For each run (one per variant: the code / paper / normalized penalty, complement init, another λ) it
prints one Markdown row: AA, BWT, the mean accuracy on each task right after learning it (plasticity:
the matrix's diagonal, tasks 2..T), and, per task t ≥ 2, the median over its steps of
‖λ∇_A penalty‖ / ‖∇_A NLL‖ on the new adapter's lora_A (how much of lora_A's gradient the penalty is),
its value at the first step, and the median cosine between the two. It draws the ratio per step for
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


def ratios(rows: list[dict]) -> list[float]:
    """‖λ∇_A penalty‖ / ‖∇_A NLL‖ per logged step (inf where the task's gradient on lora_A is zero)."""
    out = []
    for row in rows:
        name = penalty_of(row)
        if name is None:
            continue
        nll, pen = row["grad/lora_A/nll"], row[f"grad/lora_A/{name}"]
        out.append(pen / nll if nll > 0 else float("inf"))
    return out


def summarize(path: Path) -> dict:
    folder = RunFolder(path)
    results = folder.load_results()
    matrix = results["matrix"]
    logs = folder.train_logs()
    per_task = {}
    for label, rows in list(logs.items())[1:]:
        r = ratios(rows)
        cosines = [row[f"cos/lora_A/{penalty_of(row)}"] for row in rows if penalty_of(row)]
        finite = [x for x in r if x != float("inf")]
        per_task[label] = {
            "median_ratio": statistics.median(finite) if finite else None,
            "first_ratio": r[0] if r else None,
            "median_cos": statistics.median(cosines) if cosines else None,
            "ratios": r,
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
                cells.append(f"{_fmt(t['median_ratio'])} / {_fmt(t['first_ratio'])} / {_fmt(t['median_cos'], '+.2f')}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(runs: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = list(runs[0]["tasks"])
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.4), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        for r in runs:
            values = [x for x in r["tasks"].get(label, {}).get("ratios", []) if x != float("inf")]
            if values:
                ax.plot(range(2, len(values) + 2), values, label=r["name"])
        ax.set_yscale("log")
        ax.set_title(f"{label}: ‖λ∇A penalty‖ / ‖∇A NLL‖", fontsize=9)
        ax.set_xlabel("optimizer step (step 1: ratio ∞, B = 0)", fontsize=8)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("plasticity"), help="prefix of the two PNG files")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    runs = [summarize(path) for path in args.runs]
    print(table(runs))
    figures(runs, args.out)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
