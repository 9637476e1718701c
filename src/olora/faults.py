"""Fault points for the kill and race tests.

``OLORA_CRASH_AT=<point>:<n>`` kills this process with SIGKILL the n-th time it reaches ``<point>``
(``train_step``, ``eval_task`` or ``save_task``). ``OLORA_STALL_AT=<point>:<seconds>:<rank>`` makes the
process of that rank sleep when it reaches ``<point>`` (``prepare_folder``), so that a test can make one
process of a distributed run late. Unset, each costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time
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


def stall_point(point: str) -> None:
    spec = os.environ.get("OLORA_STALL_AT")
    if not spec:
        return
    name, seconds, rank = (spec.split(":") + ["", ""])[:3]
    if name == point and os.environ.get("RANK", "0") == (rank or "0"):
        time.sleep(float(seconds))
