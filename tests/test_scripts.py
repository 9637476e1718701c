"""The prepared GPU script, dry-run at tiny sizes on the CPU (the GPU run itself needs a lent machine)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_paper_scale_script_runs_the_grid_and_writes_one_table(tiny_dirs, data_dir, tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3 = this venv's
        "DATA_DIR": str(data_dir),
        "MODEL": str(tiny_dirs["llama"]),
        "TRAIN_PC": "2",
        "TEST_PC": "1",
        "OUT": str(tmp_path / "out"),
        "METHODS": "olora mtl_lora",  # the script's columns differ only in this list
        "SEEDS": "1",
        "EXTRA": "train.max_steps=1 train.mixed_precision=none data.max_source_length=240",
    }
    script = ["bash", "scripts/paper_scale.sh"]
    cut = subprocess.run(script, cwd=ROOT, env={**env, "LIMIT": "1"}, capture_output=True, text=True)
    assert cut.returncode == 0 and "call again to continue" in cut.stdout  # stopped by its time limit, table written
    done = subprocess.run(["bash", "scripts/paper_scale.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "grid" / "table.csv").open()))
    assert [r["method"] for r in rows] == ["olora", "mtl_lora"]
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "dbpedia → amazon → yelp → agnews" in text
    # the official global batch, stacking and dropout: none of them is listed as a deviation
    deviations = text.split("Deviations from the official protocol")[1]
    assert "train.batch_size" not in deviations and "grad_accum" not in deviations and "past.fold" not in deviations
    assert "paper_scale: complete" in done.stdout  # the second call finished the grid the first one started
    assert "device: CPU (no CUDA device)" in (tmp_path / "out" / "device.txt").read_text()
    cell = tmp_path / "out" / "grid" / "proxy-order1" / "olora" / "seed1" / "results.json"
    before = cell.read_text()  # a run's own wall_s: a retrained cell would differ
    again = subprocess.run(["bash", "scripts/paper_scale.sh"], cwd=ROOT, env={**env, "TABLE_ONLY": "1"})
    assert again.returncode == 0  # the table of the finished runs, nothing retrained
    assert cell.read_text() == before


def test_plasticity_script_reads_the_gradient_logs(tiny_dirs, tmp_path, capsys):
    import importlib.util

    from conftest import cli_run

    runs = []
    for name, extra in (("code", ()), ("paper", ("olora.orth=paper",))):
        runs.append(tmp_path / name)
        cli_run(tiny_dirs["llama"], runs[-1], "method=olora", "log.grad_norms=true", "train.log_every=1", *extra)
    spec = importlib.util.spec_from_file_location("plasticity", ROOT / "scripts" / "plasticity.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(r) for r in runs] + ["--out", str(tmp_path / "fig")]) == 0
    text = capsys.readouterr().out
    assert "| code |" in text and "| paper |" in text and "ratio t=2 (newsdesk)" in text
    code = script.summarize(runs[0])["tasks"]["newsdesk"]
    assert code["first_ratio"] == float("inf")  # B = 0 at the first step: the task gives lora_A no gradient
    assert (tmp_path / "fig_ratio.png").stat().st_size > 0 and (tmp_path / "fig_tradeoff.png").stat().st_size > 0


def test_plasticity_grid_pairs_the_diagonal_by_seed(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("plasticity", ROOT / "scripts" / "plasticity.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    diag = {("olora", 1): 50, ("olora", 2): 60, ("seqlora", 1): 40, ("seqlora", 2): 52}
    for (method, seed), d in diag.items():
        folder = tmp_path / "proxy-order1" / method / f"seed{seed}"
        folder.mkdir(parents=True)
        matrix = [[90], [80, d], [70, 10, d]]  # tasks 2 and 3 learned to d right after training
        res = {"method": method, "matrix": matrix, "config": {"order": 1, "seed": seed}}
        (folder / "results.json").write_text(json.dumps(res))
    text = script.grid_plasticity(tmp_path)
    assert "| 1 | olora | 2 | 55.0 ± 7.1 |  |" in text
    assert "| 1 | seqlora | 2 | 46.0 ± 8.5 | +9.0 ± 12.7 |" in text  # differences 10 and 8: 9 ± 12.706·1/√2


def test_gpu_check_sharding_and_4bit_smoke_tests_dry_run(tmp_path):
    """The fsdp and 4bit modes of scripts/gpu_check.sh print their commands: the FSDP2 and ZeRO-2 launches use
    the shipped accelerate configs, the 4-bit run sets quantize=4bit."""
    env = {**os.environ, "OUT": str(tmp_path), "MODEL": "/tmp/m"}
    lines = {}
    for mode in ("fsdp", "4bit"):
        proc = subprocess.run(
            ["bash", "scripts/gpu_check.sh", mode, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        lines[mode] = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    for name in ("fsdp2.yaml", "deepspeed_zero2.yaml"):
        launch = [line for line in lines["fsdp"] if f"--config_file src/olora/configs/accelerate/{name}" in line]
        assert launch and (ROOT / "src" / "olora" / "configs" / "accelerate" / name).is_file()
    assert sum("method=replay_ft" in line for line in lines["fsdp"]) == 2  # one process, then sharded
    assert [("quantize=4bit" in line) for line in lines["4bit"]] == [False, True]
