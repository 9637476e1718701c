"""Peak resident memory of loading a base model and training one O-LoRA step on it, per weights format.

    python scripts/memory_peak.py [MODEL]          # MODEL: smollm2 (default), a folder or a hub id

Each format runs in a fresh process (peak RSS is per process): float32 weights, bfloat16 weights and the
4-bit NF4 base (quantize=4bit, needs bitsandbytes). Reported: the RSS after imports, the peak after loading,
and the peak after adding a rank-8 adapter and one AdamW step on a batch of 4 × 128 tokens. The numbers of
docs/DISTRIBUTED.md's memory table were measured with it.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from olora.config import LoRAConfig
from olora.core.adapters import activate, add_adapter, peft_lora_config
from olora.core.models import is_seq2seq, load_model
model_name, dtype, quantize = sys.argv[1:4]
out = {"format": quantize if quantize != "none" else dtype, "after_imports_mb": round(rss_mb())}
start = time.perf_counter()
model, tok = load_model(model_name, dtype, quantize)
out["load_s"] = round(time.perf_counter() - start, 1)
out["after_load_mb"] = round(rss_mb())
model.requires_grad_(False)
model = add_adapter(model, "t0", peft_lora_config(LoRAConfig(r=8), model, is_seq2seq(model)))
activate(model, ["t0"], trainable="t0")
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.randint(10, 1000, (4, 128))
start = time.perf_counter()
loss = model(input_ids=ids, labels=ids).loss
loss.backward()
opt.step()
out["step_s"] = round(time.perf_counter() - start, 1)
out["after_step_mb"] = round(rss_mb())
out["adapter_params"] = sum(p.numel() for p in params)
print(json.dumps(out))
"""


def measure(model: str, dtype: str, quantize: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, model, dtype, quantize], capture_output=True, text=True, timeout=900
    )
    if proc.returncode:
        return {"format": quantize if quantize != "none" else dtype, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    rows = [measure(model, "float32", "none"), measure(model, "bfloat16", "none"), measure(model, "float32", "4bit")]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
