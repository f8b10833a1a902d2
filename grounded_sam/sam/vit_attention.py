"""SAM ViT attention with its relative-position bias built a band of query rows at a time.

transformers' SAM (and HQ-SAM) attention builds the decomposed rel-pos bias for all queries
at once: ``heads x 4096 x 4096`` floats (800 MB for ViT-B) in each global block, written and
read back once. Splitting the queries into row bands bounds that memory and gives the same
numbers (each query row's softmax never sees another row). The parameters and the math are
transformers'; only the order of the work changes.

What makes the bands fast on a CPU (one ViT-B global block in float32: 1.66 s -> 1.00 s on a
2-core AVX2 machine, 0.89 s -> 0.76 s on a 2-core AVX512 EPYC):
query, key and value are made contiguous once (SDPA copies strided inputs on every call),
every band's bias is written into one buffer (a fresh large tensor per band page-faults),
and a band holds several image rows (a 64-query band leaves SDPA's kernels underused).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..runtime.forward_swap import replace_forward

# Bias floats per band: 48M (192 MB in float32) is 15 image rows of a ViT-B global block,
# 11 of ViT-H's; the stock forward holds the whole 800 MB bias, so this still bounds memory.
BIAS_BAND_ELEMENTS = 48 << 20


def banded_attention_forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
    """Drop-in ``forward`` for ``SamVisionAttention``/``SamHQVisionAttention`` with rel-pos (and their SDPA subclasses)."""
    batch, height, width, _ = hidden_states.shape
    heads = self.num_attention_heads
    tokens = height * width
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4).contiguous()
    query, key, value = qkv.unbind(0)  # each [batch, heads, tokens, head_dim], contiguous
    out = _banded_rel_pos_attention(self, query, key, value, height, width)
    out = out.permute(0, 2, 1, 3).reshape(batch, height, width, -1)
    return self.proj(out), None


def _banded_rel_pos_attention(self, query, key, value, height: int, width: int) -> torch.Tensor:
    batch, heads, tokens, dim = query.shape
    table_h = self.get_rel_pos(height, height, self.rel_pos_h).to(query.dtype)  # [H, H, dim]
    table_w = self.get_rel_pos(width, width, self.rel_pos_w).to(query.dtype)  # [W, W, dim]
    grid_query = query.reshape(batch, heads, height, width, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_query, table_h)[..., :, None]  # bias per key row
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_query, table_w)[..., None, :]  # bias per key column
    rows = max(1, min(height, BIAS_BAND_ELEMENTS // max(1, batch * heads * width * tokens)))
    if rows == height:  # one band: no slicing, no copy of the output
        bias = (rel_h + rel_w).reshape(batch, heads, tokens, tokens)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    buffer = query.new_empty(batch, heads, rows, width, height, width)
    out = torch.empty_like(query)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        bias = buffer[:, :, : bottom - top]
        torch.add(rel_h[:, :, top:bottom], rel_w[:, :, top:bottom], out=bias)
        band = slice(top * width, bottom * width)
        bias = bias.reshape(batch, heads, (bottom - top) * width, tokens)
        out[:, :, band] = F.scaled_dot_product_attention(query[:, :, band], key, value, attn_mask=bias)
    return out


def use_banded_attention(vision_encoder: torch.nn.Module) -> int:
    """Switch every ViT attention block of a SAM/HQ-SAM encoder to the banded forward; returns how many."""
    attentions = (getattr(layer, "attn", None) for layer in getattr(vision_encoder, "layers", ()))
    return sum(
        replace_forward(attention, banded_attention_forward)
        for attention in attentions
        if getattr(attention, "use_rel_pos", False) and hasattr(attention, "get_rel_pos")
    )
