"""Where a wrapped model runs: its device and dtype are read from its weights, never stored twice."""

from __future__ import annotations

from typing import TypeVar

import torch

from .caching import LruCache
from .transformers_caches import clear_transformers_caches

Self = TypeVar("Self", bound="ModelPlacement")


class ModelPlacement:
    """Base for our wrappers around one ``torch.nn.Module`` held as ``self.model``."""

    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def module(self) -> torch.nn.Module:
        """Every weight this wrapper runs, as the one module a host moves between devices (the model, unless more)."""
        return self.model

    def to(self: Self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Self:
        """Move (or cast) every weight; cached results go with a change: they could never be read again (their keys
        hold the old device and dtype), yet would hold their memory, on the GPU too, until pushed out."""
        before = (self.device, self.dtype)
        self.module().to(device=device, dtype=dtype)
        if (self.device, self.dtype) != before:
            self.clear_caches()
        return self

    def caches(self) -> tuple[LruCache, ...]:
        """The per-image result caches this model keeps (a moved or offloaded model never reads old entries)."""
        return ()

    def clear_caches(self) -> None:
        """Drop cached results, e.g. when the host offloads the model to free memory; transformers' own
        process-wide caches too, which would otherwise keep tensors on the old device."""
        for cache in self.caches():
            cache.clear()
        clear_transformers_caches()
