"""``olora run`` under DeepSpeed ZeRO-2 (accelerate's launcher, the shipped config) equals one process.

Runs only where DeepSpeed can: with deepspeed installed and 2 GPUs. On olora's CPU machines it skips:
accelerate 1.15 starts DeepSpeed only on accelerator devices, and DeepSpeed's CPU start JIT-compiles a C++
communication op (docs/DISTRIBUTED.md says what was tried). ZeRO-2 partitions the optimizer state and the
gradients, not the weights, so the tolerance is DDP's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from olora.cli import main
from test_fsdp import ARGS, _olora_lines, _saved

CONFIG = Path(__file__).resolve().parents[1] / "src" / "olora" / "configs" / "accelerate" / "deepspeed_zero2.yaml"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None or torch.cuda.device_count() < 2,
    reason="DeepSpeed ZeRO-2 needs the deepspeed package and 2 GPUs (accelerate starts it on accelerators only)",
)


def test_zero2_olora_matches_one_process(tiny_dirs, tmp_path):
    extra = ["method=olora", "tasks=[sentiment,newsdesk,helpline]", "past.fold=stack", "train.mixed_precision=none"]
    assert main(["run", f"model={tiny_dirs['llama']}", *ARGS, *extra, f"output_dir={tmp_path / 'one'}"]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG)]
    cmd += ["--num_processes", "2", "--main_process_port", "0", "-m", "olora", "run", f"model={tiny_dirs['llama']}"]
    cmd += [*ARGS, *extra, f"output_dir={tmp_path / 'zero2'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, _olora_lines(proc)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "zero2" / "results.json").read_text())
    assert two["num_processes"] == 2 and two["matrix"] == one["matrix"]
    for stage in ("0-sentiment", "1-newsdesk", "2-helpline"):
        a, b = _saved(tmp_path / "one", stage), _saved(tmp_path / "zero2", stage)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-4)
