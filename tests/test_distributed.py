"""``olora run`` with 2 CPU processes (torchrun, gloo DDP through accelerate) equals one process.

Same global batch: each process trains on its half of every micro-batch and DDP averages the
gradients. The per-process loss is a mean over that process's answer tokens, so the result equals the
single-process token mean up to float reassociation and the (small) imbalance of answer lengths between
the halves: adapters agree to 1e-4, and the accuracy matrix exactly on this run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import MULTI_PROCESS_ARGS, killed_and_resumed
from olora.cli import main

ARGS = ["tasks=[sentiment,newsdesk]", *MULTI_PROCESS_ARGS]


# Rank 0 is made 3 s late to prepare the run folder: rank 1 must wait for it, not write into an unprepared
# folder (which made rank 0 refuse it as "not an olora run", the CI failure of session 6).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "OLORA_STALL_AT": "prepare_folder:3:0"}


def torchrun(model_dir, out, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``olora run`` in 2 CPU processes. torchrun is what `accelerate launch --multi_gpu` runs;
    ACCELERATE_USE_CPU makes Accelerator use gloo DDP; --standalone picks a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "olora", "run", f"model={model_dir}", *ARGS, *extra, f"output_dir={out}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**ENV, **(env or {})})


def _olora_lines(proc: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in proc.stderr.splitlines() if "olora" in line.lower())[-4000:]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tiny_dirs, tmp_path):
    assert main(["run", f"model={tiny_dirs['llama']}", *ARGS, f"output_dir={tmp_path / 'single'}"]) == 0
    proc = torchrun(tiny_dirs["llama"], tmp_path / "ddp")
    assert proc.returncode == 0, _olora_lines(proc)
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["num_processes"] == 2 and single["num_processes"] == 1
    assert ddp["matrix"] == single["matrix"]
    for stage in ("0-sentiment", "1-newsdesk"):
        a = load_file(str(tmp_path / "single" / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "ddp" / "tasks" / stage / "adapter" / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_to_the_uninterrupted_run(tiny_dirs, tmp_path):
    """Each process restores its own RNG state: with dropout, the two processes' streams part as soon as
    their shares of a batch differ in length (restoring rank 0's state everywhere changed rank 1's masks)."""
    extra = ["lora.dropout=0.3", "train.max_steps=4", "train.checkpoint_every=1", "tasks=[sentiment]"]
    whole, resumed = killed_and_resumed(torchrun, tiny_dirs["llama"], tmp_path, *extra)
    a = load_file(str(whole / "tasks" / "0-sentiment" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "tasks" / "0-sentiment" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
