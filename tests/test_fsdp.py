"""``olora run`` sharded with FSDP2 (accelerate's FSDP plugin, fsdp_version 2) over 2 CPU processes (gloo)
equals one process at the same global batch.

The base model is sharded by transformer block; adapters stay whole on every process (their gradients
averaged), full fine-tuning shards weights, gradients and AdamW state (olora.core.sharding). Every process
computes the same loss mean over its half of each micro-batch as under DDP, so the weights agree with one
process to float reassociation: within 1e-5 here (measured: 1.2e-7 for O-LoRA, 5e-7 for replay_ft), and the
accuracy matrix exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import MULTI_PROCESS_ARGS, killed_and_resumed, long_test
from olora.cli import main
from olora.config import TrainConfig
from olora.core.train import lockstep_pieces, step_pieces
from olora.data.encoding import Encoded

CONFIG = Path(__file__).resolve().parents[1] / "src" / "olora" / "configs" / "accelerate" / "fsdp2.yaml"
ARGS = MULTI_PROCESS_ARGS
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
TOLERANCE = 1e-5


def accelerate_launch(model_dir: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The launch line of docs/DISTRIBUTED.md: accelerate's launcher with olora's FSDP2 config, on CPU."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG)]
    cmd += ["--num_processes", "2", "--main_process_port", "0"]
    cmd += ["-m", "olora", "run", f"model={model_dir}", *ARGS, *extra, f"output_dir={out}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**ENV, **(env or {})})


def torchrun_fsdp(model_dir: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The same run under torchrun with the variables accelerate's launcher sets for that config (saves the
    launcher's start-up, ~7 s)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "olora", "run", f"model={model_dir}", *ARGS, *extra, f"output_dir={out}"]
    fsdp = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**ENV, **fsdp, **(env or {})})


def _olora_lines(proc: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in proc.stderr.splitlines() if "olora" in line.lower() or "Error" in line)[-4000:]


def _saved(out: Path, stage: str) -> dict[str, torch.Tensor]:
    folder = out / "tasks" / stage
    name = "adapter/adapter_model.safetensors" if (folder / "adapter").is_dir() else "model/model.safetensors"
    return load_file(str(folder / name))


def assert_same_run(single: Path, sharded: Path, atol: float = TOLERANCE) -> None:
    one = json.loads((single / "results.json").read_text())
    two = json.loads((sharded / "results.json").read_text())
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["resources"]["sharding"]["value"] == "fsdp2" and "sharding" not in one["resources"]
    assert two["matrix"] == one["matrix"]
    for stage in sorted(p.name for p in (single / "tasks").iterdir()):
        a, b = _saved(single, stage), _saved(sharded, stage)
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [  # O-LoRA, three tasks: the third trains beside a stacked past adapter and its penalty reads two past ones;
        # replay_ft: every weight, gradient and AdamW moment sharded, each stage's model saved gathered (a higher
        # lr, so that the matrix holds more than zeros)
        pytest.param(["method=olora", "past.fold=stack", "tasks=[sentiment,newsdesk,helpline]"], id="olora_stacked"),
        pytest.param(["method=replay_ft", "tasks=[sentiment,newsdesk]", "train.lr=3e-3", "train.max_steps=6"], id="ft"),
    ],
)
def test_fsdp_matches_one_process(tiny_dirs, tmp_path, extra):
    """Two FSDP2 processes against one at the same global batch: same matrix, weights within TOLERANCE."""
    assert main(["run", f"model={tiny_dirs['llama']}", *ARGS, *extra, f"output_dir={tmp_path / 'one'}"]) == 0
    proc = torchrun_fsdp(tiny_dirs["llama"], tmp_path / "fsdp", *extra)
    assert proc.returncode == 0, _olora_lines(proc)
    if "method=replay_ft" in extra:
        assert any(x > 0 for row in json.loads((tmp_path / "one" / "results.json").read_text())["matrix"] for x in row)
    assert_same_run(tmp_path / "one", tmp_path / "fsdp")


@pytest.mark.slow
@long_test
def test_fsdp_olora_with_merged_past_matches_one_process(tiny_dirs, tmp_path):
    """past.fold=merge adds the past adapter into the sharded base: each process into its own rows. T5, whose
    shared embedding stays whole; launched with accelerate's launcher and the shipped config, as
    docs/DISTRIBUTED.md shows."""
    extra = ["method=olora", "past.fold=merge", "tasks=[sentiment,newsdesk]"]
    assert main(["run", f"model={tiny_dirs['t5']}", *ARGS, *extra, f"output_dir={tmp_path / 'one'}"]) == 0
    proc = accelerate_launch(tiny_dirs["t5"], tmp_path / "fsdp", *extra)
    assert proc.returncode == 0, _olora_lines(proc)
    assert_same_run(tmp_path / "one", tmp_path / "fsdp")


@pytest.mark.slow
@long_test
def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_run(tiny_dirs, tmp_path):
    """Full fine-tuning: the checkpoint holds the gathered weights and AdamW state, and a resume scatters them
    back into the shards: bit-identical to the run that was not killed."""
    extra = ["method=replay_ft", "tasks=[sentiment]", "train.lr=3e-3", "train.max_steps=4", "train.checkpoint_every=1"]
    whole, resumed = killed_and_resumed(torchrun_fsdp, tiny_dirs["llama"], tmp_path, *extra)
    a, b = _saved(whole, "0-sentiment"), _saved(resumed, "0-sentiment")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_processes_run_the_same_number_of_passes():
    """Sharded weights are all-gathered in every forward: a process whose share of a micro-batch is cut into
    fewer row chunks gets zero-share passes; the shares count against the whole micro-batch's answer tokens
    (times the processes), so over the processes they add up to the processes' number."""
    lengths = [40, 40, 40, 3, 40, 3]  # rank 0 gets the rows 0, 2, 4 (3 chunks); rank 1 the rows 1, 3, 5 (2)

    def encoded(n: int) -> Encoded:
        return Encoded(prompt_ids=list(range(n)), target_ids=[1, 2])

    examples = [encoded(n) for n in lengths]
    cfg = TrainConfig(batch_size=6, max_batch_tokens=50, loss_normalization="token")
    window = [list(range(6))]
    plain = [step_pieces(window, examples, cfg, rank, 2) for rank in (0, 1)]
    assert len(plain[0]) != len(plain[1])
    padded = [lockstep_pieces(window, examples, cfg, rank, 2) for rank in (0, 1)]
    assert len(padded[0]) == len(padded[1]) == max(len(p) for p in plain)
    for rank in (0, 1):
        assert padded[rank][: len(plain[rank])] == plain[rank]
        assert all(share == 0 for _, share in padded[rank][len(plain[rank]) :])
    assert sum(share for rank in (0, 1) for _, share in padded[rank]) == pytest.approx(2.0)
