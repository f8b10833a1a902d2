"""Grounding DINO's encoder layer with its feed-forward (256 -> 2048 -> 256) run in token blocks.

The ~20,000 image tokens of an 800x1200 image make a 164 MB intermediate in transformers'
layer; ``token_blocks`` says why blocks are faster. ReLU runs in place on each block.
"""

from __future__ import annotations

import types

import torch

from ..token_blocks import feed_forward_in_blocks


def blocked_deformable_layer_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    position_embeddings: torch.Tensor | None = None,
    reference_points=None,
    spatial_shapes=None,
    spatial_shapes_list=None,
    level_start_index=None,
    output_attentions: bool = False,
):
    """Drop-in ``forward`` for ``GroundingDinoDeformableLayer`` in inference (dropout off, ReLU)."""
    if self.training:
        return self._stock_forward(
            hidden_states, attention_mask, position_embeddings, reference_points, spatial_shapes, spatial_shapes_list,
            level_start_index, output_attentions,
        )  # fmt: skip
    attended, attn_weights = self.self_attn(
        hidden_states=hidden_states,
        attention_mask=attention_mask,
        encoder_hidden_states=hidden_states,
        encoder_attention_mask=attention_mask,
        position_embeddings=position_embeddings,
        reference_points=reference_points,
        spatial_shapes=spatial_shapes,
        spatial_shapes_list=spatial_shapes_list,
        level_start_index=level_start_index,
        output_attentions=output_attentions,
    )
    hidden_states = self.self_attn_layer_norm(hidden_states + attended)
    return self.final_layer_norm(hidden_states + feed_forward_in_blocks(hidden_states, self.fc1, torch.relu_, self.fc2)), attn_weights


def use_blocked_feed_forward(model: torch.nn.Module) -> int:
    """Switch every ReLU ``GroundingDinoDeformableLayer`` of a Grounding DINO model; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "GroundingDinoDeformableLayer" and isinstance(module.activation_fn, torch.nn.ReLU):
            if not hasattr(module, "_stock_forward"):
                module._stock_forward = module.forward
                module.forward = types.MethodType(blocked_deformable_layer_forward, module)
                count += 1
    return count
