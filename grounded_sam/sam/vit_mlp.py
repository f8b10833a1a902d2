"""SAM ViT's MLP (768 -> 3072 -> 768 for ViT-B) run in token blocks; ``token_blocks`` says why."""

from __future__ import annotations

import types

import torch

from ..token_blocks import feed_forward_in_blocks


def blocked_mlp_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Drop-in ``forward`` for ``SamMLPBlock``/``SamHQMLPBlock``: the same ``lin2(act(lin1(x)))``."""
    return feed_forward_in_blocks(hidden_states, self.lin1, self.act, self.lin2)


def use_blocked_mlp(vision_encoder: torch.nn.Module) -> int:
    """Switch the MLP of every ViT layer of a SAM/HQ-SAM encoder; returns how many."""
    count = 0
    for layer in getattr(vision_encoder, "layers", ()):
        mlp = getattr(layer, "mlp", None)
        if all(hasattr(mlp, name) for name in ("lin1", "act", "lin2")) and getattr(mlp.forward, "__func__", None) is not blocked_mlp_forward:
            mlp.forward = types.MethodType(blocked_mlp_forward, mlp)
            count += 1
    return count
