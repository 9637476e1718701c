"""olora: continual fine-tuning of language models with O-LoRA (Wang et al., EMNLP 2023 Findings).

Not to be confused with PEFT's ``init_lora_weights="olora"``, an orthonormal *initialisation* of a
single LoRA adapter; this package implements the continual-learning method.
"""

__version__ = "0.2.1"
