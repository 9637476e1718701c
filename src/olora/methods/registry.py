"""The method registry: ``method=<name>`` finds its class here.

A method module registers its class with ``@register("name")``; ``olora.methods`` imports every module of
the package, so a new method is one new module and nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from olora.config import OPTION_SECTIONS, default_options
from olora.errors import OloraError
from olora.methods.base import Method

METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method available as ``method=<name>`` (a subclass named ``name`` is stored,
    so one class can be registered under several names)."""

    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__})
        return cls

    return add


def define(name: str, *bases: type) -> type[Method]:
    """Register the combination of ``bases`` (a baseline's mechanics over what trains) as ``name``."""
    unit = "full fine-tuning" if any(getattr(b, "trains", None) == "model" for b in bases) else "one LoRA adapter"
    cls = type(name, bases, {"__doc__": f"{bases[0].__doc__.strip()} ({unit})"})
    register(name)(cls)
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OloraError(f"method={name!r} is invalid: must be one of {', '.join(METHODS)}{hint}")
    return METHODS[name]


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """A fresh instance of the method registered as ``name``, with its option sections taken from
    ``options`` (a config's ``cfg.options``; the defaults if None)."""
    return method_class(name)(options if options is not None else default_options())


def unread_sections(name: str) -> frozenset[str]:
    """The option sections method ``name`` does not read (other methods' settings change nothing in its run)."""
    return frozenset(OPTION_SECTIONS) - set(method_class(name).option_sections())
