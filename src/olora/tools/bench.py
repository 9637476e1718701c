"""``olora bench``: a grid of methods × orders × seeds, and one comparison table with two figures.

A grid column is a method, or a labelled variant ``method@label`` (``olora@paper``) with settings of its
own. An override ``<column>:key=value`` applies to that column's cells only, so that each method runs at its
own tuned settings (``osf:train.lr=1e-4``; ``olora@paper:olora.orth=paper``).

Every run is an ordinary ``olora run`` in ``OUT/<benchmark>-order<k>/<method>/seed<s>``; finished runs
are skipped on re-run, and an interrupted one resumes, but only if it was made with the same config: a cell
run with other settings is refused before anything trains (``--table-only`` lists it under the table
instead), so a table never shows numbers of settings other than its command's. The table gives AA, BWT
and forgetting per method and order as mean ± std over seeds (Markdown + CSV).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from olora.config import config_to_dict, load_config
from olora.core.metrics import not_learned
from olora.errors import OloraError
from olora.methods import method_class
from olora.runner import run
from olora.store.rundir import RunFolder

log = logging.getLogger("olora")


def run_dir(out: Path, benchmark: str, order: str, method: str, seed: int) -> Path:
    return out / f"{benchmark}-order{order}" / method / f"seed{seed}"


def method_of(column: str) -> str:
    """The method a grid column runs: ``olora@paper`` runs ``olora``."""
    return column.split("@", 1)[0]


def split_overrides(overrides: list[str], methods: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides for every cell, and ``{column: its own overrides}`` from those written
    ``<column>:key=value`` (a ``:`` after the first ``=`` is part of a value, as in ``model=hf:owner/name``)."""
    common, own = [], {m: [] for m in methods}
    for item in overrides:
        head, colon, rest = item.partition(":")
        if not colon or "=" in head:
            common.append(item)
            continue
        method_class(method_of(head))  # an unknown method name is an error naming it
        if head not in own:
            raise OloraError(f"override {item!r} is for {head!r}, which is not in --methods: add it or drop it")
        own[head].append(rest)
    return common, own


def run_grid(
    config: str | None,
    overrides: list[str],
    benchmark: str,
    orders: list[str],
    methods: list[str],
    seeds: list[int],
    out: Path,
    run_missing: bool = True,
    tolerate: tuple[type[Exception], ...] = (),
) -> list[dict]:
    """Run (or reuse) every cell of the grid; return all results. ``run_missing=False``: only reuse,
    and log the cells that have no finished run. A cell whose folder holds a run of another config is an
    error before anything trains; with ``run_missing=False`` its result is kept, its differences listed
    in ``result["config_changes"]`` (the table prints them). A run that raises one of ``tolerate`` (tune:
    a diverged trial) is logged and returned as ``{"failed": message}`` with its column, seed and order."""
    results = []
    # Validate every cell's config before the first (long) run starts.
    cells, changed = [], {}
    common, own = split_overrides(overrides, methods)
    for order in orders:
        for method in methods:
            for seed in seeds:
                folder = run_dir(out, benchmark, order, method, seed)
                cell = [
                    *common,
                    *own[method],
                    f"benchmark={benchmark}",
                    f"order={order}",
                    f"method={method_of(method)}",
                    f"seed={seed}",
                    f"output_dir={folder}",
                ]
                cfg = load_config(config, cell)
                method_class(method_of(method))
                cells.append((folder, cfg, method))
                saved, tree = RunFolder(folder), config_to_dict(cfg)
                tasks = saved.task_changes(tree)
                changes = saved.config_changes(tree) + ([f"tasks: {tasks}"] if tasks else [])
                if changes:
                    changed[folder] = changes
    if changed and run_missing:
        folder, changes = next(iter(changed.items()))
        raise OloraError(
            f"{len(changed)} cell(s) of {str(out)!r} hold runs of another config, e.g. {str(folder)!r} "
            f"({'; '.join(changes)}): pass the settings they were run with, choose another --out, or delete "
            "those folders to run them again"
        )
    for folder, cfg, column in cells:
        done = RunFolder(folder).finished_results()
        if done is None and not run_missing:
            log.warning("no finished run in %s: left out of the table", folder)
            continue
        if done is None:
            try:
                done = run(cfg)
            except tolerate as exc:
                log.warning("%s failed: %s", folder, exc)
                done = {"failed": str(exc), "seed": cfg.seed, "config": {"order": cfg.order}}
            release_memory()
        elif folder in changed:
            log.warning("%s was run with another config (%s)", folder, "; ".join(changed[folder]))
            done = {**done, "config_changes": changed[folder]}
        results.append({**done, "column": column})
    return results


def release_memory() -> None:
    """Hand a finished run's memory back, so a grid holds no more than its largest run: collect the
    model's reference cycles, then ask glibc to return freed heap pages (it keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def cells(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The grid's results by (order, method), in the order they came."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((str(r["config"].get("order")), r.get("column") or r["method"]), []).append(r)
    return groups


def cells_by_seed(results: list[dict]) -> dict[tuple[str, str], dict[int | None, dict]]:
    """The grid's results by (order, method), each a map seed -> result: what pairing by seed reads."""
    return {key: {r["config"].get("seed"): r for r in runs} for key, runs in cells(results).items()}


TARGET_HALF_WIDTH = 4.0  # AA points: the power a ranking of methods needs (issue 23)


def paired_rows(results: list[dict], reference: str = "olora") -> list[dict]:
    """Per order and baseline: ``reference − baseline`` in AA and BWT, seeds paired, with the half-width of
    the 95 % t-interval, and the seeds the ΔAA interval would need to be ±``TARGET_HALF_WIDTH``."""
    from olora.core.metrics import mean_std, paired_difference, seeds_needed

    by = cells_by_seed(results)
    rows = []
    for (order, method), runs in sorted(by.items()):
        ref = by.get((order, reference))
        if method == reference or not ref:
            continue
        seeds = sorted(set(ref) & set(runs))
        if not seeds:
            continue
        row = {"order": order, "comparison": f"{reference} − {method}", "seeds": len(seeds)}
        value = lambda r, key: learning(r) if key == "learning" else r[key]  # noqa: E731
        for key in ("aa", "bwt", "learning"):
            if key == "learning" and not all("matrix" in r for r in [*ref.values(), *runs.values()]):
                row[key], row[f"{key}_real"] = "n/a", False
                continue
            a, b = [value(ref[s], key) for s in seeds], [value(runs[s], key) for s in seeds]
            diff, half = paired_difference(a, b)
            row[key] = f"{diff:+.1f}" + ("" if half is None else f" ± {half:.1f}")
            row[f"{key}_real"] = half is not None and abs(diff) > half
            if key == "aa" and half is not None:
                std = mean_std([x - y for x, y in zip(a, b, strict=True)])[1]
                row["seeds_needed"] = seeds_needed(std, TARGET_HALF_WIDTH)
        rows.append(row)
    return rows


def paired_table(rows: list[dict]) -> str:
    lines = [
        "| order | difference | seeds | ΔAA (95 % CI) | ΔBWT (95 % CI) | Δlearned (95 % CI) | interval excludes 0 "
        f"| seeds for ΔAA ± {TARGET_HALF_WIDTH:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"aa": "AA", "bwt": "BWT", "learning": "learned"}
    for r in rows:
        real = ", ".join(names[k] for k in names if r.get(f"{k}_real")) or "none"
        cols = " | ".join(str(r.get(k, "n/a")) for k in names)
        needed = r.get("seeds_needed", "n/a")
        lines.append(f"| {r['order']} | {r['comparison']} | {r['seeds']} | {cols} | {real} | {needed} |")
    return "\n".join(lines)


def standard_errors(results: list[dict]) -> str:
    """The grid's statistical power: the median over (order, method) of the standard error of AA and BWT."""
    from olora.core.metrics import mean_std

    se = {"aa": [], "bwt": []}
    for runs in cells(results).values():
        if len(runs) > 1:
            for key in se:
                se[key].append(mean_std([r[key] for r in runs])[1] / len(runs) ** 0.5)
    if not se["aa"]:
        return ""
    return (
        f"Standard error of a mean over seeds (median over the cells): AA {statistics.median(se['aa']):.1f}, "
        f"BWT {statistics.median(se['bwt']):.1f} points."
    )


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for (order, method), runs in cells(results).items():
        finals = [r["matrix"][-1] for r in runs]
        rows.append(
            {
                "order": order,
                "method": method,
                "seeds": len(runs),
                "aa": _mean_std([r["aa"] for r in runs]),
                "bwt": _mean_std([r["bwt"] for r in runs]),
                "forgetting": _mean_std([r["forgetting"] for r in runs]),
                "learned": _mean_std([learning(r) for r in runs]),
                "final_row": " / ".join(f"{statistics.mean(c):.1f}" for c in zip(*finals, strict=True)),
                "not_learned": not_learned_cell(runs),
                "wall_min": f"{statistics.mean(r['wall_s'] for r in runs) / 60:.1f}",
            }
        )
    return rows


NOT_LEARNED_FLAG = "⚠ mostly not learned"


def not_learned_cell(runs: list[dict]) -> str:
    """The mean count over seeds of tasks not learned (accuracy right after training within chance) out of
    the cell's tasks, flagged when it is most of them: such a cell's AA and BWT measure nothing."""
    counts = []
    for r in runs:
        if "labels_per_task" not in r:  # results of olora < 0.3
            return "n/a"
        counts.append(len(not_learned(r["matrix"], r["labels_per_task"], r["n_test_per_task"])))
    mean, total = statistics.mean(counts), len(runs[0]["tasks"])
    return f"{mean:.1f}/{total}" + (f" {NOT_LEARNED_FLAG}" if mean > total / 2 else "")


def gap_closed(results: list[dict]) -> dict[str, float | None]:
    """Per order: (AA_olora − AA_seqlora) / (AA_mtl − AA_seqlora), in %; None unless MTL > SeqLoRA.
    MTL is mtl_lora (the same adapter family) where the grid has it, else mtl_ft. The means are over the
    seeds all three columns share: a column with extra seeds would otherwise average other data samples."""
    by = cells_by_seed(results)
    out = {}
    for order in sorted({k[0] for k in by}):
        mtl = "mtl_lora" if (order, "mtl_lora") in by else "mtl_ft"
        try:
            columns = [by[(order, x)] for x in ("olora", "seqlora", mtl)]
        except KeyError:
            continue
        seeds = set.intersection(*(set(c) for c in columns))
        if not seeds:
            continue
        o, s, m = (statistics.mean(c[seed]["aa"] for seed in seeds) for c in columns)
        out[order] = 100 * (o - s) / (m - s) if m > s else None
    return out


COLUMNS = ["order", "method", "seeds", "aa", "bwt", "forgetting", "learned", "final_row", "not_learned", "wall_min"]


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| order | method | seeds | AA | BWT | forgetting | learned (right after training) "
        "| final row (per task, mean) | not learned | wall (min) |"
    )
    lines = [head, "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def csv_table(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def machine() -> str:
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    from olora.core.resources import cpu_has_bf16

    cpu = "CPU with bf16 units" if cpu_has_bf16() else "CPU without bf16 units"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{cpu}, no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores{mem}, {device}, torch {torch.__version__}"


def precisions(results: list[dict]) -> str:
    """How the cells ran (weights dtype, forward precision), with counts: ``auto`` resolves per machine, and a
    table over cells made on several machines must say whether they all computed alike."""
    ran = Counter(
        f"{r['resources']['dtype']['value']} weights, mixed precision {r['resources']['mixed_precision']['value']}"
        for r in results
        if all(isinstance((r.get("resources") or {}).get(k), dict) for k in ("dtype", "mixed_precision"))
    )
    if not ran:
        return ""
    warning = " ⚠ unlike computations in one table" if len(ran) > 1 else ""
    counted = "; ".join(f"{k} ({n} run{'s' if n > 1 else ''})" for k, n in ran.most_common())
    return f"Cells ran as: {counted}{warning}."


def grid_deviations(results: list[dict]) -> list[str]:
    """The union of the runs' deviations; one that not every method has names the methods that have it."""
    by_method: dict[str, set[str]] = {}
    for r in results:
        # runs of olora 0.2.0 wrote a task's data note as "data: <task> from <note>"
        devs = {
            re.sub(r"^data: (\S+) from ", r"data: \1: ", d) for d in (r.get("protocol") or {}).get("deviations", [])
        }
        by_method.setdefault(r.get("column") or r["method"], set()).update(devs)
    out = []
    for d in sorted(set().union(*by_method.values())):
        having = [m for m, devs in by_method.items() if d in devs]
        out.append(d if len(having) == len(by_method) else f"{d} ({', '.join(having)} only)")
    return out


def learning(result: dict) -> float:
    """Mean accuracy on each task right after training it (the diagonal): how well tasks are learned."""
    matrix = result["matrix"]
    return statistics.mean(matrix[j][j] for j in range(len(matrix)))


def retention(result: dict) -> float | None:
    """Mean final accuracy on the earlier tasks over their accuracy right after training them, in %."""
    matrix = result["matrix"]
    kept = [matrix[-1][j] / matrix[j][j] for j in range(len(matrix) - 1) if matrix[j][j] > 0]
    return 100 * statistics.mean(kept) if kept else None


def grid_figures(results: list[dict], out: Path) -> list[Path]:
    """Two figures of the grid: AA against BWT, and learning against retention (mean ± std over seeds)."""
    from olora.core.metrics import mean_std
    from olora.tools.plots import grid_scatter

    points = []
    for (order, column), runs in cells(results).items():
        point = {"label": column, "order": order}
        for key, values in (
            ("aa", [r["aa"] for r in runs]),
            ("bwt", [r["bwt"] for r in runs if r["bwt"] is not None]),
            ("learning", [learning(r) for r in runs]),
            ("retention", [v for v in (retention(r) for r in runs) if v is not None]),
        ):
            point[key], point[f"{key}_std"] = mean_std(values) if values else (float("nan"), None)
        points.append(point)
    figures = [out / "aa_bwt.png", out / "learning_retention.png"]
    grid_scatter(
        points, "aa", "bwt", "AA (%)", "BWT (points)", "Average accuracy against backward transfer", figures[0]
    )
    grid_scatter(
        points, "learning", "retention", "learning: accuracy right after training a task (%)",
        "retention: final accuracy on earlier tasks / right after training them (%)",
        "Which method keeps old tasks and learns new ones", figures[1],
    )  # fmt: skip
    return figures


def write_tables(results: list[dict], out: Path, command: str) -> str:
    rows = summary_rows(results)
    table = markdown_table(rows)
    (out / "table.csv").write_text(csv_table(rows), encoding="utf-8")
    tasks = {f"order {r['config'].get('order')}": " → ".join(r["tasks"]) for r in results}
    deviations = grid_deviations(results)
    gaps = gap_closed(results)
    parts = [
        f"Command: `{command}`",
        f"Table made on: {machine()}. Date: {time.strftime('%Y-%m-%d')}.",
        *filter(None, [precisions(results)]),
        "",
        table,
        "",
        *(f"- {k}: {v}" for k, v in tasks.items()),
    ]
    if any(NOT_LEARNED_FLAG in r["not_learned"] for r in rows):
        parts += [
            "",
            f"{NOT_LEARNED_FLAG}: in these cells most tasks' accuracy right after training is within two standard "
            "errors of chance (their test size): their AA, BWT and forgetting measure nothing.",
        ]
    if gaps:
        parts += [
            "",
            "Share of the SeqLoRA → MTL gap in AA that O-LoRA closes: "
            + ", ".join(
                f"order {k}: {v:.0f} %" if v is not None else f"order {k}: n/a (MTL is not above SeqLoRA)"
                for k, v in gaps.items()
            ),
        ]
    pairs = paired_rows(results)
    if pairs:
        parts += [
            "",
            "Paired differences over seeds (olora minus each baseline, same seed = same data sample; ± is the "
            "half-width of the 95 % t-interval; learned = mean accuracy on each task right after training it; "
            "'interval excludes 0' names the differences it resolves; 'seeds for ΔAA ± 4' is how many seeds would "
            "narrow the ΔAA interval to ±4 points if the spread seen so far held, a planning estimate):",
            "",
            paired_table(pairs),
        ]
    power = standard_errors(results)
    if power:
        parts += ["", power]
    changed = cells([r for r in results if r.get("config_changes")])
    if changed:
        parts += ["", "**Cells run with settings other than this command's** (saved value -> command's value):"]
        for (order, method), runs in changed.items():
            for r in runs:
                parts.append(f"- order {order}, {method}, seed {r['seed']}: {'; '.join(r['config_changes'])}")
    if deviations:
        parts += ["", "Deviations from the official protocol (from each run's results.json; all cells unless named):"]
        parts += [f"- {d}" for d in deviations]
    figures = grid_figures(results, out)
    parts += ["", "Figures: " + ", ".join(f"`{f.name}`" for f in figures) + f" in `{out}`."]
    text = "\n".join(parts) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    return text
