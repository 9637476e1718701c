"""What the machine can do: precision and the training token cap chosen for ``auto`` settings.

Every choice comes with a one-line reason, recorded in results.json (``resources``).

* Weights (``dtype=auto``): bfloat16 on CUDA GPUs that support it (what GPU users expect; the adapters
  stay float32, peft upcasts them), float32 elsewhere.
* Forward passes (``train.mixed_precision=auto``): bf16 autocast on CUDA with bf16 and on CPUs with
  bf16 units (AVX512-BF16 or AMX), float32 elsewhere: without those units bf16 is emulated and slower.
* Token cap (``train.max_batch_tokens=auto``): training activations grow with the padded tokens of a
  micro-batch. Measured on SmolLM2 (30 layers, width 576, float32): ~1.4 MB per token, i.e. ~20 floats
  per layer and hidden unit; the cap is the activation budget divided by that estimate. The budget is a
  quarter of the available memory, at most 2.5 GiB on a CPU (~1,940 SmolLM2 tokens: a batch of 8
  CL_Benchmark prompts in one piece; at a 970-token cap, 30 dbpedia steps took 96 s instead of 81 s)
  and half of the free GPU memory on CUDA.
* Kernel caches (CPU): oneDNN compiles a kernel for every new matmul shape and keeps up to 1,024 of
  them, in its own cache and in PyTorch's ideep cache. Training batches have ever-new lengths, so in
  bf16 these caches grew ~14 MB per optimizer step (measured: the heap in use went 191 → 589 MB over
  30 dbpedia steps), gigabytes over a run: the "heap growth" earlier versions blamed on glibc. 64
  entries each stop the growth at no measured speed cost (0 recompiles every call: 4× slower).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

FLOATS_PER_LAYER_UNIT = 20  # activation floats kept per token, layer and hidden unit (measured, SmolLM2)
CPU_BUDGET_CAP = int(2.5 * 2**30)
KERNEL_CACHE = 64  # entries kept by oneDNN's primitive cache and by ideep's LRU cache (default 1024 each)
KERNEL_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
MIN_TOKENS = 256


@dataclass(frozen=True)
class Choice:
    value: object
    reason: str
    config_key: str | None = None  # the setting it resolves (a dotted config key), if it resolves one


def cpu_has_bf16() -> bool:
    """True if the CPU has native bf16 arithmetic (AVX512-BF16 or AMX tiles), as torch reports it.
    ``OLORA_CPU_BF16=0`` or ``=1`` overrides the probe (the test suite pins 0 so that its float
    comparisons do not depend on the machine)."""
    forced = os.environ.get("OLORA_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def cuda_has_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def choose_dtype(setting: str, device: torch.device) -> Choice:
    if setting != "auto":
        return Choice(setting, "set in the config")
    if cuda_has_bf16(device):
        return Choice("bfloat16", "auto: bf16 weights on a CUDA GPU with bf16 support")
    return Choice("float32", f"auto: float32 weights on {device.type}")


def choose_precision(setting: str, device: torch.device) -> Choice:
    if setting != "auto":
        return Choice(setting, "set in the config")
    if cuda_has_bf16(device):
        return Choice("bf16", "auto: CUDA GPU with bf16 support")
    if device.type == "cpu" and cpu_has_bf16():
        return Choice("bf16", "auto: the CPU has bf16 units (AVX512-BF16/AMX)")
    return Choice("none", f"auto: no bf16 units on this {device.type}, float32 is faster")


def available_memory(device: torch.device) -> int:
    """Bytes free for this run: free GPU memory on CUDA, MemAvailable (Linux) or total RAM otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes_per_token(model_config: object) -> int:
    """Estimated training activation bytes per token (float32), from the model's width and depth."""
    width = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model", 1024)
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "num_layers", 24)
    return FLOATS_PER_LAYER_UNIT * width * layers * 4


def choose_token_cap(setting: int | str, model_config: object, device: torch.device) -> Choice:
    if setting != "auto":
        return Choice(setting, "set in the config" + (" (0: never split)" if setting == 0 else ""))
    free = available_memory(device)
    budget = free // 2 if device.type == "cuda" else min(free // 4, CPU_BUDGET_CAP)
    per_token = activation_bytes_per_token(model_config)
    cap = max(MIN_TOKENS, budget // per_token)
    return Choice(
        int(cap),
        f"auto: {budget / 2**30:.2f} GiB activation budget ({free / 2**30:.1f} GiB available) / "
        f"~{per_token / 2**20:.2f} MiB per token",
    )


_SET_BY_US: dict[str, str] = {}  # the cache variables this process set itself, and to what


def bound_kernel_caches(device: torch.device) -> Choice:
    """Cap oneDNN's and ideep's per-shape kernel caches at ``KERNEL_CACHE`` entries on a CPU, unless the
    user set the variables. Both libraries read them when they first compile a kernel, so this must run
    before the process's first oneDNN matmul (the runner calls it before loading the model)."""
    if device.type != "cpu":
        return Choice(None, f"not used on {device.type}")
    user = {n: v for n in KERNEL_CACHE_VARS if (v := os.environ.get(n)) is not None and v != _SET_BY_US.get(n)}
    for name in KERNEL_CACHE_VARS:
        if name not in os.environ:  # remembered: a later run of this process (a bench grid) must not call it the user's
            os.environ[name] = _SET_BY_US[name] = str(KERNEL_CACHE)
    if user:
        return Choice(os.environ[KERNEL_CACHE_VARS[0]], f"set in the environment: {user}")
    return Choice(KERNEL_CACHE, "auto: bounds the per-shape kernel caches, which otherwise grow by GBs per run")


def resolve_train_config(cfg, model_config: object, device: torch.device):
    """``cfg`` (a TrainConfig) with its 'auto' precision and token cap replaced by this machine's choice."""
    return replace(
        cfg,
        mixed_precision=choose_precision(cfg.mixed_precision, device).value,
        max_batch_tokens=choose_token_cap(cfg.max_batch_tokens, model_config, device).value,
    )
