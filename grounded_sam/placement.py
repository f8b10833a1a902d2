"""Where a wrapped model runs: its device and dtype are read from its weights, never stored twice."""

from __future__ import annotations

from typing import TypeVar

import torch

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

    def to(self: Self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Self:
        self.model.to(device=device, dtype=dtype)
        return self
