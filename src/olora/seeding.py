"""Seeds derived from (run seed, purpose, index) without collisions.

``seed + index`` would give seed s, task k+1 the same adapter initialisation as seed s+1, task k;
hashing the whole tuple makes every (seed, purpose, index) its own stream.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 31-bit seed from sha256("seed:purpose:index")."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
