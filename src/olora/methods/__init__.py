"""Continual-learning methods, one module each; importing this package registers every one of them.

``olora methods`` lists them; olora.methods.base describes the API a method implements.
"""

from __future__ import annotations

import importlib
import pkgutil

from olora.methods.base import Method, Stage, Tuned
from olora.methods.registry import METHODS, get_method, method_class, register, unread_sections

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "Stage", "Tuned", "get_method", "method_class", "register", "unread_sections"]
