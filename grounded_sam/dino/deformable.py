"""Multi-scale deformable attention as one weighted gather (``embedding_bag``) on the CPU.

transformers' pure-PyTorch version samples each level with ``grid_sample``, stacks the
samples (heads x channels x queries x levels x points, ~330 MB per encoder layer at
800x1200) and only then weights and sums them. Here every bilinear corner becomes one row
index and one weight (bilinear weight x attention weight), and ``embedding_bag`` sums the
weighted rows per (query, head) directly: the same bilinear sampling with zero padding and
``align_corners=False`` as ``grid_sample``, without the big intermediate.

The zero padding is a real border of zero rows around each level's map (one before, two
after), and a location is first clamped into that border: a corner outside the map then
reads a zero row, so no corner needs its own range test or weight mask. Indices are int32.
The index and weight arithmetic runs over ~2.5M sampling points per encoder layer, so each
pass saved is measurable; under bf16 autocast it was most of the layer's non-GEMM time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..forward_swap import replace_forward

# Zero rows and columns around each level's map: one before it, two after it (a location
# clamped to the map's far edge has its upper corner one further out).
PAD_BEFORE, PAD_AFTER = 1, 2
# Queries whose corners are computed together: their temporaries (about 2 MB each) stay in cache.
QUERY_BLOCK = 2048


def _bordered_table(value: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, list[int], int]:
    """``[batch * heads * bordered tokens, dim]``: each level's map with its zero border, heads outermost.

    Also returns where each level starts within one head's rows, and how many rows one head has.
    """
    batch, _, heads, dim = value.shape
    levels, level_rows, start, rows = [], [], 0, 0
    for height, width in spatial_shapes:
        grid = value[:, start : start + height * width].view(batch, height, width, heads, dim).permute(0, 3, 1, 2, 4)
        levels.append(F.pad(grid, (0, 0, PAD_BEFORE, PAD_AFTER, PAD_BEFORE, PAD_AFTER)).flatten(2, 3))
        level_rows.append(rows)
        start += height * width
        rows += levels[-1].shape[2]
    return torch.cat(levels, 2).reshape(-1, dim), level_rows, rows


def gather_deformable(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """``[B, Q, heads * dim]`` from ``value [B, S, heads, dim]``, locations ``[B, Q, heads, L, P, 2]``, weights ``[B, Q, heads, L, P]``.

    Every per-(head, level, point) constant is laid out in full, so each elementwise step runs
    over long contiguous rows: broadcasting a per-level size over a last dimension of 2 or 4
    made the same steps several times slower.
    """
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    device, coord_dtype = value.device, sampling_locations.dtype
    # under autocast the weighted sum runs in float32, as grid_sample's weights are
    table, level_rows, head_rows = _bordered_table(value.float() if value.dtype in (torch.float16, torch.bfloat16) else value, spatial_shapes)

    def per_sample(values: list, dtype: torch.dtype) -> torch.Tensor:  # [heads, levels, points, len(values[l])]
        return torch.tensor(values, device=device, dtype=dtype).view(1, levels, 1, -1).expand(heads, levels, points, -1).contiguous()

    size_xy = per_sample([(w, h) for h, w in spatial_shapes], coord_dtype).view(-1)  # clamp bound and scale, x then y
    stride = [w + PAD_BEFORE + PAD_AFTER for _, w in spatial_shapes]  # rows per map row, per level
    row_stride = per_sample([[w] for w in stride], torch.int32).view(-1)
    head_start = torch.arange(heads, device=device, dtype=torch.int32).view(heads, 1, 1, 1) * head_rows
    origin = (head_start + per_sample([[r + PAD_BEFORE * w + PAD_BEFORE] for r, w in zip(level_rows, stride, strict=True)], torch.int32)).view(-1)
    corner_step = per_sample([(0, 1, w, w + 1) for w in stride], torch.int32).permute(0, 3, 1, 2).reshape(heads, 4, -1)
    samples, per_head = heads * levels * points, levels * points
    minus_half = torch.tensor(-0.5, device=device, dtype=coord_dtype)

    out = table.new_empty(batch, queries, heads * dim)
    for b in range(batch):
        for first in range(0, queries, QUERY_BLOCK):
            block = slice(first, min(queries, first + QUERY_BLOCK))
            count = block.stop - block.start
            # pixel = location * size - 0.5 (grid_sample's align_corners=False), clamped into the zero border
            pixel = torch.addcmul(minus_half, sampling_locations[b, block].reshape(count, 2 * samples), size_xy).clamp_(min=-1.0)
            pixel = torch.minimum(pixel, size_xy, out=pixel).nan_to_num_(nan=-1.0)  # a NaN location reads zeros, never past the table
            low = pixel.floor()
            frac = pixel.sub_(low).view(count, samples, 2)  # in 0..1
            low = low.to(torch.int32).view(count, samples, 2)
            row = torch.addcmul(origin + b * heads * head_rows, low[..., 1], row_stride).add_(low[..., 0])  # corner (x0, y0)
            index = torch.empty(count, heads, 4, per_head, device=device, dtype=torch.int32)  # [q, heads, corner, level x point]
            torch.add(row.view(count, heads, 1, per_head), corner_step, out=index)
            attention = attention_weights[b, block].reshape(count, samples).to(coord_dtype)  # may be the caller's: not in place
            weight_y1 = frac[..., 1] * attention  # attention weight x fy
            weight_y0 = attention - weight_y1  # attention weight x (1 - fy)
            weight_x1 = frac[..., 0]
            weight_x0 = 1 - weight_x1
            weight = table.new_empty(count, heads, 4, per_head)
            for corner, (wy, wx) in enumerate([(weight_y0, weight_x0), (weight_y0, weight_x1), (weight_y1, weight_x0), (weight_y1, weight_x1)]):
                torch.mul(wy.view(count, heads, per_head), wx.view(count, heads, per_head), out=weight[:, :, corner])
            bags = count * heads
            out[b, block] = F.embedding_bag(index.view(bags, -1), table, per_sample_weights=weight.view(bags, -1), mode="sum").view(count, -1)
    return out.to(value.dtype)


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
    return sum(replace_forward(module, _forward) for module in model.modules() if type(module).__name__ == "MultiScaleDeformableAttention")
