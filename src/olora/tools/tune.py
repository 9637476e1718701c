"""``olora tune``: each method's one main hyperparameter chosen on the validation split, same budget for all.

Every column (a method, or a variant ``method@label``) declares what it tunes (``Method.tuned``: O-LoRA's
λ1, InfLoRA's threshold, EWC's weight, ... else the learning rate) and three values. ``tune`` runs them as
bench columns ``<column>@<key><value>`` with ``data.eval_split=validation`` (held out of train; the test
split is never read), so every cell is an ordinary run that resumes and is skipped when finished. The value
with the highest mean validation AA over the orders and seeds is chosen (a tie keeps the configured
value). ``OUT/tuned.txt`` holds the chosen per-column overrides for the test-split ``olora bench``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from olora.config import config_to_dict, load_config
from olora.errors import OloraError
from olora.methods import method_class
from olora.presets import flatten
from olora.tools.bench import method_of, run_grid, split_overrides


@dataclass
class Trial:
    """One column at one value of its tuned key."""

    column: str  # the column being tuned
    key: str
    value: float
    current: bool  # the value the config resolves (what an untuned run uses)

    @property
    def label(self) -> str:
        """The grid column that runs it: ``olora@lambda_orth0.05`` (``olora@paper-lambda_orth5`` for a variant)."""
        joint = "-" if "@" in self.column else "@"
        return f"{self.column}{joint}{self.key.rsplit('.', 1)[-1]}{self.value:g}"


def trials(config: str | None, overrides: list[str], benchmark: str, order: str, columns: list[str]) -> list[Trial]:
    """The three trials of every column, values taken from its resolved config (its own overrides included)."""
    common, own = split_overrides(overrides, columns)
    out = []
    for column in columns:
        tuned = method_class(method_of(column)).tuned
        cell = [*common, *own[column], f"benchmark={benchmark}", f"order={order}", f"method={method_of(column)}"]
        cfg = load_config(config, cell)
        current = flatten(config_to_dict(cfg)).get(tuned.key)
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            raise OloraError(f"tune: {column}'s {tuned.key} is {current!r}, not a number: set it to one")
        values = tuned.candidates(float(current))
        out += [Trial(column, tuned.key, v, v == float(current)) for v in values]
    return out


def choose(results: list[dict], grid: list[Trial]) -> dict[str, dict]:
    """``{column: {"trial": the chosen Trial, "scores": {value: [validation AA per run]}}}``: the highest
    mean AA; on a tie the configured value, then the first listed. A column with no finished run is left out."""
    aa: dict[str, list[float]] = {}
    for r in results:
        aa.setdefault(r["column"], []).append(r["aa"])
    chosen = {}
    for column in dict.fromkeys(t.column for t in grid):
        ran = [t for t in grid if t.column == column and aa.get(t.label)]
        if not ran:
            continue
        best = max(ran, key=lambda t: (statistics.mean(aa[t.label]), t.current))
        chosen[column] = {"trial": best, "scores": {t.value: aa[t.label] for t in ran}}
    return chosen


def table(chosen: dict[str, dict], grid: list[Trial]) -> str:
    """Markdown: each column's values with the mean ± std validation AA over its runs, the chosen one marked."""
    lines = [
        "| column | key | value | validation AA | runs | |",
        "|---|---|---|---|---|---|",
    ]
    for column, pick in chosen.items():
        for t in (t for t in grid if t.column == column):
            scores = pick["scores"].get(t.value)
            if not scores:
                lines.append(f"| {column} | {t.key} | {t.value:g} | (not run) | 0 | |")
                continue
            spread = f" ± {statistics.stdev(scores):.1f}" if len(scores) > 1 else ""
            mark = "chosen" if t is pick["trial"] else ""
            mark += " (configured)" if t.current else ""
            lines.append(
                f"| {column} | {t.key} | {t.value:g} | {statistics.mean(scores):.1f}{spread} | {len(scores)} | {mark} |"
            )
    return "\n".join(lines)


def tune(
    config: str | None,
    overrides: list[str],
    benchmark: str,
    orders: list[str],
    columns: list[str],
    seeds: list[int],
    out: Path,
    run_missing: bool = True,
) -> str:
    """Run (or reuse) every trial on the validation split, choose, write ``OUT/tuning.md`` and ``OUT/tuned.txt``
    (one ``<column>:<key>=<value>`` per line); return the table."""
    if any("data.eval_split" in o for o in overrides):
        raise OloraError("tune: data.eval_split is set by tune (validation): drop it from the overrides")
    grid = trials(config, overrides, benchmark, orders[0], columns)
    common, own = split_overrides(overrides, columns)
    per_trial = [f"{t.label}:{o}" for t in grid for o in [*own[t.column], f"{t.key}={t.value!r}"]]
    results = run_grid(
        config,
        [*common, "data.eval_split=validation", *per_trial],
        benchmark,
        orders,
        [t.label for t in grid],
        seeds,
        out,
        run_missing=run_missing,
    )
    chosen = choose(results, grid)
    if not chosen:
        raise OloraError(f"tune: no finished trial in {str(out)!r}: run it without --table-only")
    text = (
        f"Validation AA (data.eval_split=validation) of {benchmark}, orders {' '.join(orders)}, seeds "
        f"{' '.join(map(str, seeds))}: three values per column, the same budget for every method.\n\n"
        + table(chosen, grid)
    )
    lines = [f"{c}:{p['trial'].key}={p['trial'].value!r}" for c, p in chosen.items()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.md").write_text(text + "\n", encoding="utf-8")
    (out / "tuned.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return text
