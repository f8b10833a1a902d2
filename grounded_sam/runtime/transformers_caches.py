"""transformers' process-wide caches, emptied when our models go.

Some of transformers' model code caches results with ``functools.lru_cache`` on functions and methods
(its ``compile_compatible_method_lru_cache``). Their lifetime is the process's, not the model's: SAM 2's
sine position embedding keeps its last result, 64 MiB at 1024 pixels, after every model that made it is
freed, and a cached method keeps the module it was called on. Emptying them costs a recompute of a few
milliseconds the next time a model needs one.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterator
from types import ModuleType


def _caches_in(function: object) -> Iterator[functools._lru_cache_wrapper]:
    """The lru caches a function is, or wraps (a decorator's closure holds the cached function)."""
    function = function.__func__ if isinstance(function, staticmethod | classmethod) else function
    if isinstance(function, functools._lru_cache_wrapper):
        yield function
    for cell in getattr(function, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, functools._lru_cache_wrapper):
            yield content


def _model_modules() -> list[ModuleType]:
    return [m for name, m in list(sys.modules.items()) if name.startswith("transformers.models.") and ".modeling_" in name and m is not None]


def _caches() -> Iterator[functools._lru_cache_wrapper]:
    for module in _model_modules():
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != module.__name__:  # imported from elsewhere: not this module's
                continue
            for member in list(vars(value).values()) if inspect.isclass(value) else [value]:
                yield from _caches_in(member)


def cached_entries() -> int:
    """How many results transformers' model code holds in its lru caches now."""
    return sum(cache.cache_info().currsize for cache in _caches())


def clear_transformers_caches() -> int:
    """Empty the lru caches of every transformers modeling module imported so far; the number emptied."""
    emptied = 0
    for cache in _caches():
        if cache.cache_info().currsize:
            cache.cache_clear()
            emptied += 1
    return emptied
