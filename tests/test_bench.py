"""olora bench: a grid of runs, one table, finished runs skipped on re-run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import olora.runner
from olora.cli import main
from olora.errors import OloraError
from olora.tools.bench import split_overrides


def _no_training(*args, **kwargs):
    raise AssertionError("a finished cell was trained again")


@pytest.mark.slow
def test_bench_grid_table_and_skip(tiny_dirs, data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    args = [
        "bench",
        f"model={tiny_dirs['llama']}",
        f"data.dir={data_dir}",
        "data.train_per_class=2",
        "data.test_per_class=1",
        "train.max_steps=1",
        "data.max_source_length=240",
        "seqlora:train.lr=0.002",  # SeqLoRA's cells only
        "--benchmark",
        "proxy",
        "--orders",
        "1",
        "--methods",
        "seqlora",
        "olora",
        "mtl_lora",
        "--seeds",
        "1",
        "2",
        "--out",
        str(out),
        "--results-md",
        str(tmp_path / "RESULTS.md"),
    ]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["order"], r["method"], r["seeds"]) for r in rows] == [
        ("1", m, "2") for m in ("seqlora", "olora", "mtl_lora")
    ]
    assert all("±" in r["aa"] for r in rows)  # mean ± std over the two seeds
    lrs = {
        m: json.loads((out / "proxy-order1" / m / "seed1" / "results.json").read_text())["config"]["train"]["lr"]
        for m in ("seqlora", "olora")
    }
    assert lrs == {"seqlora": 0.002, "olora": 0.001}
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Produced by `olora bench`" in text and "dbpedia → amazon → yelp → agnews" in text
    assert "NOT the paper's split" in text and "train.batch_size=8 (official: 64)" in text
    assert "yelp replaces yahoo" in text  # the proxy's deviations from the standard protocol are listed
    assert "4.0/4 ⚠ mostly not learned" in text  # a tiny random model: every cell measured nothing
    assert (out / "aa_bwt.png").stat().st_size > 1000 and (out / "learning_retention.png").stat().st_size > 1000
    assert "| 1 | olora − seqlora | 2 |" in text and "Standard error of a mean over seeds" in text
    first = (out / "proxy-order1" / "olora" / "seed1" / "results.json").read_text()  # its wall_s is a run's own
    monkeypatch.setattr(olora.runner, "train_task", _no_training)
    assert main(args) == 0  # every run finished: nothing is retrained (training would raise)
    assert (out / "proxy-order1" / "olora" / "seed1" / "results.json").read_text() == first
    # --table-only: a table of the finished cells; a cell without a run is left out, and nothing trains
    wider = [a if a != "mtl_lora" else "inclora" for a in args] + ["--table-only"]
    assert main(wider) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["seqlora", "olora"]
    assert not (out / "proxy-order1" / "inclora").exists()
    # Another setting on a finished grid is refused before anything trains (it was reused silently before),
    # and --table-only names the cells whose settings differ from its command.
    capsys.readouterr()
    changed = [args[0], "train.lr=0.5", *args[1:]]
    assert main(changed) == 2
    assert "train.lr: 0.001 -> 0.5" in capsys.readouterr().err
    assert (out / "proxy-order1" / "olora" / "seed1" / "results.json").read_text() == first
    assert main([*changed, "--table-only"]) == 0
    text = (out / "table.md").read_text()
    assert "Cells run with settings other than this command's" in text
    assert "- order 1, olora, seed 2: train.lr: 0.001 -> 0.5" in text
    capsys.readouterr()


def test_table_of_an_empty_grid_is_a_one_line_error(tmp_path, capsys):
    args = ["bench", "--methods", "olora", "--out", str(tmp_path / "none"), "--table-only"]
    assert main(args) == 2
    assert "no finished run in" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_gap_closed():
    from olora.tools.bench import gap_closed

    def res(method, aa, seed=1):
        return {"method": method, "aa": aa, "config": {"order": "1", "seed": seed}}

    assert gap_closed([res("seqlora", 40), res("olora", 70), res("mtl_lora", 80)]) == {"1": 75.0}
    assert gap_closed([res("seqlora", 50), res("olora", 40), res("mtl_ft", 45)]) == {"1": None}
    # O-LoRA's extra seed (another data sample) is left out of the means: only the seeds all three share count
    runs = [res("seqlora", 40), res("olora", 70), res("mtl_lora", 80), res("olora", 0, seed=2)]
    assert gap_closed(runs) == {"1": 75.0}
    assert gap_closed([res("seqlora", 40), res("olora", 70, seed=2), res("mtl_lora", 80)]) == {}


def test_paired_rows_pair_seeds_and_mark_real_differences():
    from olora.core.metrics import paired_difference
    from olora.tools.bench import paired_rows, paired_table

    def res(method, seed, aa, bwt):
        return {"method": method, "aa": aa, "bwt": bwt, "config": {"order": "1", "seed": seed}}

    runs = [res("olora", s, 60 + s, -1) for s in (1, 2, 3)]
    runs += [res("seqlora", s, 50 + 2 * s, -1 - s) for s in (3, 1, 2)]  # any order: paired by seed
    runs += [res("inclora", 1, 61, 0)]  # one shared seed: a difference without an interval
    rows = {r["comparison"]: r for r in paired_rows(runs)}
    diff, half = paired_difference([61, 62, 63], [52, 54, 56])
    assert rows["olora − seqlora"]["aa"] == f"{diff:+.1f} ± {half:.1f}" and rows["olora − seqlora"]["aa_real"]
    assert rows["olora − seqlora"]["bwt"] == "+2.0 ± 2.5" and not rows["olora − seqlora"]["bwt_real"]  # 1, 2, 3
    assert rows["olora − inclora"] == {**rows["olora − inclora"], "seeds": 1, "aa": "+0.0", "aa_real": False}
    # differences 9, 8, 7 (std 1): 2 seeds give ±9.0, 3 give ±2.5 ≤ 4; one shared seed gives no estimate
    assert rows["olora − seqlora"]["seeds_needed"] == 3 and "seeds_needed" not in rows["olora − inclora"]
    table = paired_table([rows["olora − seqlora"], rows["olora − inclora"]]).splitlines()
    assert table[0].endswith("| seeds for ΔAA ± 4 |") and table[2].endswith("| AA | 3 |")
    assert table[3].endswith("| none | n/a |")


def test_hub_id_is_a_real_path(monkeypatch):
    """A hub id goes to the hub (offline here), and the failure is one clear line."""
    import huggingface_hub.constants
    import pytest

    from olora.core.models import load_model
    from olora.errors import OloraError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: the env var is late
    with pytest.raises(OloraError, match="cannot load model config for 'google-t5/t5-small'"):
        load_model("google-t5/t5-small")


def test_split_overrides_per_method():
    common, own = split_overrides(["train.lr=1e-3", "osf:train.lr=1e-5", "model=hf:owner/name"], ["olora", "osf"])
    assert common == ["train.lr=1e-3", "model=hf:owner/name"]  # a colon inside a value is not a method prefix
    assert own == {"olora": [], "osf": ["train.lr=1e-5"]}
    with pytest.raises(OloraError, match="'nlora', which is not in --methods"):
        split_overrides(["nlora:nlora.weight=1e-4"], ["olora"])
    with pytest.raises(OloraError, match="method='nolra' is invalid"):
        split_overrides(["nolra:train.lr=1"], ["olora"])


def test_deviations_not_shared_by_every_method_name_their_methods():
    from olora.tools.bench import grid_deviations

    def result(method, *devs):
        return {"method": method, "protocol": {"deviations": list(devs)}}

    results = [
        result("olora", "model=smollm2 (official: T5-large)", "data: dbpedia from train carved (old wording)"),
        result("osf", "model=smollm2 (official: T5-large)", "data: dbpedia: train carved (old wording)",
               "train.lr=0.0001 (official: 0.001)"),
    ]  # fmt: skip
    assert grid_deviations(results) == [
        "data: dbpedia: train carved (old wording)",
        "model=smollm2 (official: T5-large)",
        "train.lr=0.0001 (official: 0.001) (osf only)",
    ]


@pytest.mark.slow
def test_a_labelled_variant_is_a_column_of_its_own(tiny_dirs, data_dir, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", f"model={tiny_dirs['llama']}", f"data.dir={data_dir}", "data.train_per_class=1",
            "data.test_per_class=1", "train.max_steps=1", "data.max_source_length=240",
            "olora@paper:olora.orth=paper", "--benchmark", "proxy", "--orders", "1",
            "--methods", "olora", "olora@paper", "--seeds", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["olora", "olora@paper"]
    saved = json.loads((out / "proxy-order1" / "olora@paper" / "seed1" / "results.json").read_text())
    assert saved["method"] == "olora" and saved["config"]["olora"]["orth"] == "paper"
    assert "| 1 | olora − olora@paper | 1 |" in (out / "table.md").read_text()


@pytest.mark.parametrize("folder", ["cpu_forgetting", "cpu_forgetting_tuned"])
def test_the_committed_cells_rebuild_the_committed_table(tmp_path, folder):
    """results/cpu_forgetting (defaults) and results/cpu_forgetting_tuned (the values olora tune chose) hold
    each cell's results.json and config.yaml: the command written at the top of its table.md, run with
    --table-only on a copy (nothing trains, no data or model needed), gives the committed table.csv, and no
    cell counts as run with other settings than that command."""
    import shlex
    import shutil

    root = Path(__file__).resolve().parents[1] / "results" / folder
    out = shutil.copytree(root, tmp_path / "cells")
    command = (root / "table.md").read_text().splitlines()[0].removeprefix("Command: `").removesuffix("`")
    args = shlex.split(command)[1:]
    assert args[0] == "bench" and "--table-only" in args and args[args.index("--out") + 1] == f"results/{folder}"
    args[args.index("--out") + 1] = str(out)
    if "--results-md" in args:
        del args[args.index("--results-md") : args.index("--results-md") + 2]
    assert main(args) == 0
    assert (out / "table.csv").read_text() == (root / "table.csv").read_text()
    assert "other than this command" not in (out / "table.md").read_text()


def test_the_table_says_how_its_cells_computed_and_warns_when_they_differ():
    """train.mixed_precision=auto is bf16 on some CPUs: a table over cells from several machines says so."""
    from olora.tools.bench import precisions

    ran = lambda mp: {"resources": {"dtype": {"value": "float32"}, "mixed_precision": {"value": mp}}}  # noqa: E731
    assert precisions([ran("none"), ran("none")]) == "Cells ran as: float32 weights, mixed precision none (2 runs)."
    mixed = precisions([ran("none"), ran("bf16"), ran("none")])
    assert mixed.startswith("Cells ran as: float32 weights, mixed precision none (2 runs); float32 weights, mixed ")
    assert mixed.endswith("bf16 (1 run) ⚠ unlike computations in one table.")
    assert precisions([{"resources": {}}]) == ""
