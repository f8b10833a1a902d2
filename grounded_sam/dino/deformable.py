"""Multi-scale deformable attention as one weighted gather (``embedding_bag``) on the CPU.

transformers' pure-PyTorch version samples each level with ``grid_sample``, stacks the
samples (heads x channels x queries x levels x points, ~330 MB per encoder layer at
800x1200) and only then weights and sums them. Here every bilinear corner becomes one row
index and one weight (bilinear weight x attention weight), and ``embedding_bag`` sums the
weighted rows per (query, head) directly: the same bilinear sampling with zero padding and
``align_corners=False`` as ``grid_sample``, without the big intermediate.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _axis_corners(coord: torch.Tensor, size: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Bilinear weights and clamped indices of the two neighbours along one axis.

    ``coord`` is in 0..1 as Grounding DINO gives it; it is mapped to pixels exactly as
    ``grid_sample`` does (via the -1..1 grid). A neighbour outside the map gets weight 0.
    """
    pixel = (2 * coord - 1 + 1) * (size.to(coord.dtype) / 2) - 0.5
    low = pixel.floor()
    frac = pixel - low
    low = low.long()
    weight_low = (1 - frac).mul_((low >= 0) & (low < size))
    weight_high = frac.mul_((low >= -1) & (low < size - 1))
    index_low = low.clamp(min=0).minimum(size - 1)
    index_high = (low + 1).clamp_(min=0).minimum(size - 1)
    return (weight_low, weight_high), (index_low, index_high)


def gather_deformable(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """``[B, Q, heads * dim]`` from ``value [B, S, heads, dim]``, locations ``[B, Q, heads, L, P, 2]``, weights ``[B, Q, heads, L, P]``."""
    batch, tokens, heads, dim = value.shape
    _, queries, _, levels, _, _ = sampling_locations.shape
    device = value.device
    table = value.permute(0, 2, 1, 3).reshape(batch * heads * tokens, dim)
    shapes = torch.tensor(spatial_shapes, device=device).view(levels, 2)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    heights, widths = shapes[:, 0].view(levels, 1), shapes[:, 1].view(levels, 1)
    block = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1) * heads
    block = (block + torch.arange(heads, device=device).view(1, 1, heads, 1, 1)) * tokens  # row of (b, head, token 0)
    first_row = block + starts.view(levels, 1)

    (wx0, wx1), (cx0, cx1) = _axis_corners(sampling_locations[..., 0], widths)
    (wy0, wy1), (cy0, cy1) = _axis_corners(sampling_locations[..., 1], heights)
    row0 = cy0.mul_(widths).add_(first_row)
    row1 = cy1.mul_(widths).add_(first_row)
    wy0 = wy0.mul_(attention_weights)
    wy1 = wy1.mul_(attention_weights)
    index = torch.stack([row0 + cx0, row0 + cx1, row1 + cx0, row1 + cx1], 3)
    weight = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], 3)
    bags = batch * queries * heads
    if table.dtype in (torch.float16, torch.bfloat16):  # under autocast: sum in float32, as grid_sample's weights are
        table = table.float()
    out = F.embedding_bag(index.view(bags, -1), table, per_sample_weights=weight.view(bags, -1).to(table.dtype), mode="sum")
    return out.view(batch, queries, heads * dim).to(value.dtype)


def _forward(
    self,
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int,
) -> torch.Tensor:
    if value.device.type != "cpu":  # grid_sample is a native kernel on accelerators: keep transformers' path
        return self._stock_forward(
            value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations, attention_weights, im2col_step
        )
    return gather_deformable(value, value_spatial_shapes_list, sampling_locations, attention_weights)


def use_gathered_deformable_attention(model: torch.nn.Module) -> int:
    """Switch every ``MultiScaleDeformableAttention`` core of a Grounding DINO model; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "MultiScaleDeformableAttention" and not hasattr(module, "_stock_forward"):
            module._stock_forward = module.forward
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count
