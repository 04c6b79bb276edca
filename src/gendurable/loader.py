"""The user's engine, imported by name: `MODULE:ENGINE`, as `gendurable worker`, `gendurable
check`, the commands' `--app` option and `gendurable.web.app(engine=...)` name it."""

from __future__ import annotations

import importlib
from typing import Any

from .engine.engine import Engine
from .errors import ConfigError


def load_engine(target: str) -> Engine:
    """Import `module:attribute` and return the Engine it names (or a factory's result)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"expected MODULE:ENGINE (e.g. app.workers:engine), got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}") from None
    if callable(obj) and not isinstance(obj, Engine):
        obj = obj()
    if not isinstance(obj, Engine):
        raise ConfigError(f"{target!r} is {obj!r}, not a gendurable Engine")
    return obj
