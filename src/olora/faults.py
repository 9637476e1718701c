"""Crash points for the kill tests.

``OLORA_CRASH_AT=<point>:<n>`` kills this process with SIGKILL the n-th time it reaches ``<point>``
(``train_step``, ``eval_task`` or ``save_task``). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    spec = os.environ.get("OLORA_CRASH_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
