"""Views of finished runs: plain text for the terminal, and an HTML + Markdown report with figures."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import yaml

from olora.store.rundir import RunFolder


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
    fwt = f"  FWT {_fmt(results['fwt'], 0).strip()}" if results.get("fwt") is not None else ""
    line = (
        f"AA {_fmt(results['aa'], 0).strip()}  BWT {_fmt(results['bwt'], 0).strip()}  "
        f"forgetting {_fmt(results['forgetting'], 0).strip()}{fwt}"
    )
    return line + ("\n" + format_not_learned(results) if format_not_learned(results) else "")


def format_not_learned(results: dict) -> str:
    """A warning line naming the tasks whose accuracy right after training is within chance ('' if none)."""
    names = results.get("not_learned") or []
    if not names:
        return ""
    tasks, matrix = results["tasks"], results["matrix"]
    parts = []
    for name in names:
        j = tasks.index(name)
        chance = 100 / results["labels_per_task"][j]
        parts.append(f"{name} {matrix[j][j]:.1f} (chance {chance:.0f})")
    return (
        f"NOT LEARNED ({len(names)} of {len(tasks)}): accuracy right after training within two standard errors of "
        f"chance: {', '.join(parts)}; their columns measure nothing"
    )


def format_metrics(results: dict) -> str:
    """Which score each column is, when a run mixes metrics ('' when every task is exact match)."""
    metrics = results.get("metrics") or []
    if all(m == "exact_match" for m in metrics):
        return ""
    names = {"exact_match": "exact match %", "rouge_l": "ROUGE-L F1 %"}
    return "scores: " + ", ".join(f"{t} {names.get(m, m)}" for t, m in zip(results["tasks"], metrics, strict=True))


def format_deviations(results: dict) -> str:
    """The run's departures from its benchmark's official protocol, one line each ('' outside a benchmark)."""
    protocol = results.get("protocol") or {}
    if not protocol:
        return ""
    lines = protocol.get("deviations", [])
    head = f"protocol: {protocol['benchmark']} order {protocol['order']}"
    return head + (": deviations\n" + "\n".join(f"  - {d}" for d in lines) if lines else ": no deviation")


def seed_summary(by_method: dict[str, list[dict]], first: str, second: str) -> str:
    """Per method: AA, BWT and the first task's final score as mean ± std over seeds; then the paired
    difference ``first − second`` per metric with its 95 % interval (seeds paired by index)."""
    from olora.core.metrics import mean_std, paired_difference

    def values(runs: list[dict]) -> dict[str, list[float]]:
        task0 = runs[0]["tasks"][0]
        return {
            "AA": [r["aa"] for r in runs],
            "BWT": [r["bwt"] for r in runs],
            f"{task0} at the end": [r["matrix"][-1][0] for r in runs],
        }

    def cell(mean: float, spread: float | None, sign: str = "") -> str:
        return f"{mean:{sign}.1f}" + ("" if spread is None else f" ± {spread:.1f}")

    table = {m: values(runs) for m, runs in by_method.items()}
    keys = list(next(iter(table.values())))
    width = max(len(m) for m in by_method) + 12
    lines = [f"{'':<{width}}" + "".join(f"{k:>22}" for k in keys)]
    for method, runs in by_method.items():
        label = f"{method} ({len(runs)} seeds)"
        lines.append(f"{label:<{width}}" + "".join(f"{cell(*mean_std(table[method][k])):>22}" for k in keys))
    diffs = [paired_difference(table[first][k], table[second][k]) for k in keys]
    lines.append(f"{first + ' − ' + second:<{width}}" + "".join(f"{cell(d, h, '+'):>22}" for d, h in diffs))
    lines.append("(mean ± std over seeds; the last row: paired difference ± half-width of its 95 % t-interval)")
    return "\n".join(lines)


def side_by_side(runs: list[dict]) -> str:
    """Each run's matrix and AA/BWT, one block per method."""
    blocks = []
    for res in runs:
        notes = "".join(f"\n{line}" for line in (format_metrics(res), format_deviations(res)) if line)
        matrix = format_matrix(res["tasks"], res["matrix"])
        blocks.append(f"== {res['method']} ({res['model']}) ==\n{matrix}\n{format_summary(res)}{notes}")
    header = f"{'method':<10}{'AA':>8}{'BWT':>8}{'forget':>8}"
    rows = [f"{r['method']:<10}{_fmt(r['aa'], 8)}{_fmt(r['bwt'], 8)}{_fmt(r['forgetting'], 8)}" for r in runs]
    return "\n\n".join(blocks) + "\n\n" + "\n".join([header, *rows])


# ----------------------------------------------------------------------------- HTML / Markdown report


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _summary_table(runs: list[dict]) -> list[list[str]]:
    head = ["run", "method", "model", "tasks", "AA", "BWT", "forgetting", "wall (s)"]
    rows = [
        [
            str(i + 1),
            r["method"],
            r["model"],
            str(len(r["tasks"])),
            _num(r["aa"]),
            _num(r["bwt"]),
            _num(r["forgetting"]),
            f"{r['wall_s']:.0f}",
        ]
        for i, r in enumerate(runs)
    ]
    return [head, *rows]


def _md_table(rows: list[list[str]]) -> str:
    return "\n".join(
        [
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
            *("| " + " | ".join(r) + " |" for r in rows[1:]),
        ]
    )


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _timing_rows(res: dict) -> list[list[str]]:
    names = res["tasks"] if len(res["timings"]) == len(res["tasks"]) else ["all"]
    return [
        ["task", "train (s)", "eval (s)", "steps"],
        *(
            [n, f"{t['train_s']:.1f}", f"{t['eval_s']:.1f}", str(t["steps"])]
            for n, t in zip(names, res["timings"], strict=True)
        ),
    ]


def build_report(run_dirs: list[Path], out: Path) -> tuple[Path, Path]:
    """Write ``out/report.html`` (self-contained) and ``out/report.md`` (+ PNGs) for the runs."""
    from olora.tools.plots import accuracy_curves, accuracy_heatmap, loss_curves, subspace_heatmap

    runs = [RunFolder(d).load_results() for d in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []  # (caption, file name)
    if len(runs) > 1:
        accuracy_curves(runs, out / "compare_curves.png")
        figures.append(("Mean accuracy on seen tasks after each task, all runs", "compare_curves.png"))
    for k, (res, run_dir) in enumerate(zip(runs, run_dirs, strict=True), start=1):
        prefix = f"run{k}_" if len(runs) > 1 else ""
        accuracy_heatmap(res, out / f"{prefix}heatmap.png")
        figures.append((f"Run {k} ({res['method']}): accuracy matrix", f"{prefix}heatmap.png"))
        accuracy_curves([res], out / f"{prefix}curves.png")
        figures.append((f"Run {k} ({res['method']}): each task's accuracy along the sequence", f"{prefix}curves.png"))
        if loss_curves(RunFolder(run_dir).train_logs(), out / f"{prefix}losses.png"):
            figures.append((f"Run {k} ({res['method']}): training loss terms per task", f"{prefix}losses.png"))
        for side in ("input", "output"):
            if res.get("subspace", {}).get(side, {}).get("layers"):
                subspace_heatmap(res["subspace"], side, out / f"{prefix}subspace_{side}.png")
                figures.append(
                    (
                        f"Run {k} ({res['method']}): mean subspace overlap between task adapters, {side} side",
                        f"{prefix}subspace_{side}.png",
                    )
                )

    summary = _summary_table(runs)
    md = ["# olora report", "", _md_table(summary), ""]
    for k, res in enumerate(runs, start=1):
        md += [
            f"## Run {k}: {res['method']} on {res['model']}",
            "",
            "```",
            format_matrix(res["tasks"], res["matrix"]),
            format_metrics(res),
            format_deviations(res),
            "```",
            "",
            _md_table(_timing_rows(res)),
            "",
        ]
    md += [f"![{cap}]({name})\n" for cap, name in figures]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    parts = [f"<h1>olora report</h1>{_html_table(summary)}"]
    for k, (res, run_dir) in enumerate(zip(runs, run_dirs, strict=True), start=1):
        parts.append(
            f"<h2>Run {k}: {html.escape(res['method'])} on {html.escape(res['model'])}</h2>"
            f"<p>{html.escape(str(run_dir))} — seed {res['seed']}, {res['architecture']}, {res['device']}</p>"
            f"<pre>{html.escape(format_matrix(res['tasks'], res['matrix']))}\n{html.escape(format_summary(res))}\n"
            f"{html.escape(format_deviations(res))}</pre>"
            f"{_html_table(_timing_rows(res))}"
            f"<details><summary>config and versions</summary><pre>"
            f"{html.escape(yaml.safe_dump(res['config'], sort_keys=False))}\n"
            f"{html.escape(json.dumps(res['versions'], indent=1))}</pre></details>"
        )
    for caption, name in figures:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>olora report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "img{max-width:100%}figure{margin:1.5em 0}pre{background:#f6f6f6;padding:8px;overflow:auto}"
        "</style></head><body>" + "".join(parts) + "</body></html>"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, md_path
