"""What 'auto' picks for precision and the token cap, and that a run records it."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest
import torch

from olora.cli import main
from olora.core import resources


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("OLORA_CPU_BF16", "1")
    assert resources.choose_precision("auto", cpu).value == "bf16"
    monkeypatch.setenv("OLORA_CPU_BF16", "0")
    assert resources.choose_precision("auto", cpu).value == "none"
    assert resources.choose_precision("none", cpu).reason == "set in the config"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resources.choose_precision("auto", cuda).value == "bf16"
    assert resources.choose_dtype("auto", cuda).value == "bfloat16"  # what GPU users expect
    assert resources.choose_dtype("auto", cpu).value == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resources.choose_dtype("auto", cuda).value == "float32"


def test_cpu_probe_asks_torch(monkeypatch):
    monkeypatch.delenv("OLORA_CPU_BF16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not resources.cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resources.cpu_has_bf16()


class _Cfg:
    hidden_size, num_hidden_layers = 576, 30  # SmolLM2-135M


def test_token_cap_follows_model_size_and_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(resources, "available_memory", lambda device: 24 * 2**30)
    cap = resources.choose_token_cap("auto", _Cfg(), cpu)
    per_token = resources.activation_bytes_per_token(_Cfg())
    assert 1.3e6 < per_token < 1.5e6  # the measured ~1.4 MB per token of SmolLM2 in float32
    assert cap.value == resources.CPU_BUDGET_CAP // per_token and "GiB" in cap.reason
    monkeypatch.setattr(resources, "available_memory", lambda device: 2 * 2**30)  # a small machine
    assert resources.choose_token_cap("auto", _Cfg(), cpu).value == (2 * 2**30 // 4) // per_token

    class Big:
        hidden_size, num_hidden_layers = 4096, 32  # LLaMA-2-7B

    assert resources.choose_token_cap("auto", Big(), cpu).value == resources.MIN_TOKENS
    assert resources.choose_token_cap(0, _Cfg(), cpu).value == 0
    assert resources.choose_token_cap(1024, _Cfg(), cpu).value == 1024


def test_a_run_records_precision_token_cap_and_peak_memory(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    args = ["run", f"model={tiny_dirs['llama']}", "tasks=[sentiment,newsdesk]", "train.max_steps=1"]
    args += ["data.train_per_class=2", "data.test_per_class=1", f"output_dir={out}"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())["resources"]
    assert res["mixed_precision"] == {"value": "none", "reason": "auto: no bf16 units on this cpu, float32 is faster"}
    assert res["dtype"]["value"] == "float32" and isinstance(res["max_batch_tokens"]["value"], int)
    assert res["max_batch_tokens"]["reason"].startswith("auto:") and res["peak_rss_mb"] > 0
    assert res["kernel_cache"]["value"] is not None


def test_kernel_caches_are_bounded_unless_the_user_set_them(monkeypatch):
    for name in resources.KERNEL_CACHE_VARS:
        monkeypatch.delenv(name, raising=False)
    assert resources.bound_kernel_caches(torch.device("cuda")).value is None
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    choice = resources.bound_kernel_caches(torch.device("cpu"))
    assert choice.value == resources.KERNEL_CACHE and choice.reason.startswith("auto:")
    assert all(os.environ[name] == str(resources.KERNEL_CACHE) for name in resources.KERNEL_CACHE_VARS)
    again = resources.bound_kernel_caches(torch.device("cpu"))  # the next run of a grid: still olora's choice
    assert again.value == resources.KERNEL_CACHE and again.reason.startswith("auto:")
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    choice = resources.bound_kernel_caches(torch.device("cpu"))
    assert choice.value == "512" and "environment" in choice.reason


_SHAPES = """
import ctypes, sys, torch
from olora.core import resources
if sys.argv[1] == "bounded":
    resources.bound_kernel_caches(torch.device("cpu"))
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usm fsm used free keep".split()]
libc.mallinfo2.restype = Info
layer = torch.nn.Linear(256, 768).requires_grad_(False)
for rows in range(8, 140):  # a new batch length every step, as in training
    x = torch.randn(rows, 256, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x).float().sum().backward()
    if rows == 24:
        start = libc.mallinfo2().used
print(libc.mallinfo2().used - start)
"""


def _heap_growth(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in resources.KERNEL_CACHE_VARS}
    out = subprocess.run([sys.executable, "-c", _SHAPES, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc's mallinfo2")
def test_bounded_kernel_caches_stop_the_heap_growing_with_new_shapes():
    """bf16 matmuls of ever-new shapes: oneDNN's default caches keep a kernel per shape, the bound does not."""
    unbounded = _heap_growth("default")
    if unbounded < 20 * 2**20:
        pytest.skip(f"this CPU's bf16 matmuls keep no per-shape kernels ({unbounded / 2**20:.1f} MB growth)")
    assert _heap_growth("bounded") < unbounded / 4


@pytest.mark.parametrize("setting", ["auto", 0, 4096])
def test_train_config_is_resolved_for_direct_callers(setting):
    from olora.config import TrainConfig

    cfg = resources.resolve_train_config(TrainConfig(max_batch_tokens=setting), _Cfg(), torch.device("cpu"))
    assert isinstance(cfg.max_batch_tokens, int) and cfg.mixed_precision in ("none", "bf16")
