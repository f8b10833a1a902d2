"""Swap one module instance's ``forward`` for a rewrite, keeping the stock one to fall back on.

The attention and feed-forward rewrites replace transformers' ``forward`` on the loaded model
only (never on the class), so other models in the process keep theirs. The stock forward stays
as ``_stock_forward`` for the paths a rewrite does not serve (training, accelerators).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch


def replace_forward(module: torch.nn.Module, forward: Callable) -> bool:
    """Bind ``forward`` as ``module.forward``; False (and nothing changed) if it already is."""
    if getattr(module.forward, "__func__", None) is forward:
        return False
    module._stock_forward = module.forward
    module.forward = types.MethodType(forward, module)
    return True
