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
pass saved is measurable; under bf16 autocast it was most of the layer's non-GEMM time. For the
same reason the encoder's attention module computes its sampling points in pixels directly
(``sampling_pixels``) rather than as transformers' normalised locations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..runtime.forward_swap import replace_forward

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


def per_sample(values: list, heads: int, points: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[heads, levels, points, len(values[l])]``: each level's constants laid out for every head and point.

    Contiguous, so the elementwise steps that use them run over long rows.
    """
    levels = len(values)
    return torch.tensor(values, device=device, dtype=dtype).view(1, levels, 1, -1).expand(heads, levels, points, -1).contiguous()


def gather_deformable(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """``[B, Q, heads * dim]`` from ``value [B, S, heads, dim]``, locations ``[B, Q, heads, L, P, 2]``, weights ``[B, Q, heads, L, P]``.

    Locations are ``grid_sample``'s, in 0..1 of each level's map.
    """
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    size_xy = per_sample([(w, h) for h, w in spatial_shapes], heads, points, sampling_locations.dtype, value.device).view(-1)
    # pixel = location * size - 0.5 (grid_sample's align_corners=False)
    pixels = torch.addcmul(size_xy.new_tensor(-0.5), sampling_locations.reshape(batch, queries, -1), size_xy)
    return gather_deformable_pixels(value, spatial_shapes, pixels, attention_weights)


def sampling_pixels(offsets: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: list[tuple[int, int]], heads: int, points: int) -> torch.Tensor:
    """Pixel coordinates ``[B, Q, heads * L * P * 2]`` of every sampling point, for 2-coordinate reference points.

    transformers computes ``location = reference + offset / size`` per (head, level, point)
    and the gather then ``location * size - 0.5``: two passes over ~2.5M points per encoder
    layer that broadcast over a last dimension of 2 (70 ms a layer at 800x1200). Here
    ``reference x size`` is spread to every (head, point) by one small product with a fixed
    matrix and added to the offsets in the same call (3 ms). It runs in the reference points'
    precision: under bf16 autocast only the offsets are bf16, as in transformers.
    """
    batch, queries, levels, _ = reference_points.shape
    dtype, device = reference_points.dtype, reference_points.device
    spread = torch.zeros(levels, 2, heads, levels, points, 2, dtype=dtype, device=device)
    for level, (height, width) in enumerate(spatial_shapes):
        spread[level, 0, :, level, :, 0] = width
        spread[level, 1, :, level, :, 1] = height
    with torch.autocast(device.type, enabled=False):
        flat_offsets = offsets.reshape(batch * queries, -1).to(dtype)
        pixels = torch.addmm(flat_offsets, reference_points.reshape(batch * queries, levels * 2), spread.view(levels * 2, -1))
    return pixels.sub_(0.5).view(batch, queries, -1)


def gather_deformable_pixels(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    pixels: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """``[B, Q, heads * dim]`` from ``value [B, S, heads, dim]``, pixels ``[B, Q, heads * L * P * 2]`` (x, y), weights ``[B, Q, heads, L, P]``.

    Every per-(head, level, point) constant is laid out in full, so each elementwise step runs
    over long contiguous rows: broadcasting a per-level size over a last dimension of 2 or 4
    made the same steps several times slower.
    """
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points = attention_weights.shape
    device, coord_dtype = value.device, pixels.dtype
    # under autocast the weighted sum runs in float32, as grid_sample's weights are
    table, level_rows, head_rows = _bordered_table(value.float() if value.dtype in (torch.float16, torch.bfloat16) else value, spatial_shapes)

    def laid_out(values: list, dtype: torch.dtype) -> torch.Tensor:
        return per_sample(values, heads, points, dtype, device)

    bound_xy = laid_out([(w, h) for h, w in spatial_shapes], coord_dtype).view(-1)  # the far zero border, x then y
    stride = [w + PAD_BEFORE + PAD_AFTER for _, w in spatial_shapes]  # rows per map row, per level
    row_stride = laid_out([[w] for w in stride], torch.int32).view(-1)
    head_start = torch.arange(heads, device=device, dtype=torch.int32).view(heads, 1, 1, 1) * head_rows
    origin = (head_start + laid_out([[r + PAD_BEFORE * w + PAD_BEFORE] for r, w in zip(level_rows, stride, strict=True)], torch.int32)).view(-1)
    corner_step = laid_out([(0, 1, w, w + 1) for w in stride], torch.int32).permute(0, 3, 1, 2).reshape(heads, 4, -1)
    samples, per_head = heads * levels * points, levels * points

    out = table.new_empty(batch, queries, heads * dim)
    for b in range(batch):
        for first in range(0, queries, QUERY_BLOCK):
            block = slice(first, min(queries, first + QUERY_BLOCK))
            count = block.stop - block.start
            # clamped into the zero border; the caller's pixels are not changed
            pixel = pixels[b, block].clamp(min=-1.0)
            pixel = torch.minimum(pixel, bound_xy, out=pixel).nan_to_num_(nan=-1.0)  # a NaN location reads zeros, never past the table
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


def _attention_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    position_embeddings: torch.Tensor | None = None,
    reference_points: torch.Tensor | None = None,
    spatial_shapes: torch.Tensor | None = None,
    spatial_shapes_list: list[tuple[int, int]] | None = None,
    level_start_index: torch.Tensor | None = None,
    output_attentions: bool = False,
):
    """``GroundingDinoMultiscaleDeformableAttention.forward`` with its sampling points made by ``sampling_pixels``.

    Only the encoder's 2-coordinate reference points on the CPU in inference; the decoder's box
    references (900 queries, cheap) and every other case keep transformers' forward.
    """
    if self.training or hidden_states.device.type != "cpu" or reference_points is None or reference_points.shape[-1] != 2:
        return self._stock_forward(
            hidden_states, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, position_embeddings=position_embeddings,
            reference_points=reference_points, spatial_shapes=spatial_shapes, spatial_shapes_list=spatial_shapes_list,
            level_start_index=level_start_index, output_attentions=output_attentions,
        )  # fmt: skip
    if position_embeddings is not None:
        hidden_states = hidden_states + position_embeddings
    batch, queries, _ = hidden_states.shape
    value = self.value_proj(encoder_hidden_states)
    if attention_mask is not None:  # padding: its values must not be sampled
        value = value.masked_fill_(~attention_mask[..., None], 0.0)
    value = value.view(batch, value.shape[1], self.n_heads, self.d_model // self.n_heads)
    attention_weights = self.attention_weights(hidden_states).view(batch, queries, self.n_heads, -1)
    attention_weights = F.softmax(attention_weights, -1).view(batch, queries, self.n_heads, self.n_levels, self.n_points)
    pixels = sampling_pixels(self.sampling_offsets(hidden_states), reference_points, spatial_shapes_list, self.n_heads, self.n_points)
    output = gather_deformable_pixels(value, spatial_shapes_list, pixels, attention_weights)
    return self.output_proj(output), attention_weights


def use_gathered_deformable_attention(model: torch.nn.Module) -> int:
    """Switch every deformable attention of a Grounding DINO model (module and core); returns how many modules."""
    kinds = {"MultiScaleDeformableAttention": _forward, "GroundingDinoMultiscaleDeformableAttention": _attention_forward}
    return sum(replace_forward(module, kinds[type(module).__name__]) for module in model.modules() if type(module).__name__ in kinds)
