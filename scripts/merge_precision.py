"""How much of a trained adapter's contribution survives merging into float32 weights when the matmul runs
under bf16 autocast, against keeping it as a stacked LoRA branch under the same autocast.

    .venv/bin/python scripts/merge_precision.py RUN/tasks/0-<task>/adapter [--model smollm2]

Prints the relative error of ΔW·x (random x, 256 rows per layer) over the adapter's layers. This number is
why olora stacks past adapters instead of merging them whenever forwards run under bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

from olora.core.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path, help="a saved PEFT adapter folder of an olora run")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    config = json.loads((args.adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    model, _ = load_model(args.model, "float32")
    weights = load_file(str(args.adapter / "adapter_model.safetensors"))
    torch.manual_seed(0)
    merged_err, stacked_err, size = [], [], []
    linear = torch.nn.functional.linear
    for key in (k for k in weights if k.endswith("lora_A.weight")):
        a, b = weights[key], weights[key.replace("lora_A", "lora_B")]
        w = model.get_submodule(key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")).weight.detach()
        x = torch.randn(256, w.shape[1])
        exact = x.double() @ (scale * b.double() @ a.double()).T
        with torch.autocast("cpu", torch.bfloat16):
            merged = linear(x, w + scale * b @ a) - linear(x, w)
            stacked = scale * linear(linear(x, a), b)
        merged_err.append(((merged.double() - exact).norm() / exact.norm()).item())
        stacked_err.append(((stacked.double() - exact).norm() / exact.norm()).item())
        size.append((scale * b @ a).abs().mean().item() / w.abs().mean().item())
    print(f"{len(size)} layers; mean |ΔW| / mean |W|: median {statistics.median(size):.2e}")
    for name, errs in (("merged", merged_err), ("stacked", stacked_err)):
        median, worst = statistics.median(errs), max(errs)
        print(f"{name} under bf16 autocast: relative error of ΔW·x median {median:.4f}, max {worst:.4f}")


if __name__ == "__main__":
    main()
