"""Grounding DINO's image-text fusion attention with the image-sized projections folded away.

Each of the six fusion-encoder layers runs transformers' ``GroundingDinoBiMultiHeadAttention``:
three linear maps of all ~20,000 image tokens to 1024 channels (image queries, image values and
the image output back to 256), about 32 GFLOP a layer, a quarter of detection. Yet the image
tokens only ever meet a handful of text tokens. By associativity the same attention is:

- logits ``(X Wq + bq) Kᵀ = X (Wq Kᵀ) + bq Kᵀ``: one ``[N, 256] x [256, heads*T]`` product;
- image output ``concat_h(P_h V_h) Wo = sum_h P_h (V_h Wo_h)``: one ``[N, heads*T] x [heads*T, 256]``;
- text output ``P'_h (X Wv_h + bv_h) = (P'_h X) Wv_h + bv_h`` (softmax rows sum to 1).

The products with ``N`` rows shrink from 1024 to ``heads*T`` columns; the masking, the
max-subtraction, the clamps and both softmaxes are transformers' own, on the same logits. Only
rounding differs (checked against transformers' module in ``tests/test_attention_rewrites.py``).
"""

from __future__ import annotations

import torch

from ..runtime.forward_swap import replace_forward


def folded_fusion_forward(
    self,
    vision_features: torch.Tensor,
    text_features: torch.Tensor,
    vision_attention_mask: torch.Tensor | None = None,
    text_attention_mask: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Drop-in ``forward`` for ``GroundingDinoBiMultiHeadAttention``: same inputs, same outputs."""
    batch, tokens, _ = vision_features.shape
    texts = text_features.shape[1]
    heads, head_dim = self.num_heads, self.head_dim
    dtype = vision_features.dtype

    def per_head(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:  # [heads, head_dim, in], [heads, head_dim]
        return linear.weight.to(dtype).view(heads, head_dim, -1), linear.bias.to(dtype).view(heads, head_dim)

    keys = self.text_proj(text_features).view(batch, texts, heads, head_dim).transpose(1, 2)  # [B, heads, T, hd]
    text_values = self.values_text_proj(text_features).view(batch, texts, heads, head_dim).transpose(1, 2)

    # logits [B, N, heads*T] = X A + c, with A = scale * Wq_h^T K_h^T and c = scale * K_h bq_h, per head
    query_weight, query_bias = per_head(self.vision_proj)
    fold = torch.einsum("hdi,bhtd->biht", query_weight, keys).reshape(batch, -1, heads * texts)
    shift = torch.einsum("hd,bhtd->bht", query_bias, keys).reshape(batch, 1, heads * texts)
    logits = torch.baddbmm(shift, vision_features, fold, alpha=self.scale, beta=self.scale)
    attn_weights = logits.view(batch, tokens, heads, texts).permute(0, 2, 1, 3).reshape(batch * heads, tokens, texts)

    # from here to both softmaxes: transformers' own steps on the same logits
    attn_weights = attn_weights - attn_weights.max()
    attn_weights = torch.clamp(attn_weights, min=-50000, max=50000)
    attn_weights_transposed = attn_weights.transpose(1, 2)
    text_attn_weights = attn_weights_transposed - torch.max(attn_weights_transposed, dim=-1, keepdim=True)[0]
    text_attn_weights = torch.clamp(text_attn_weights, min=-50000, max=50000)
    if vision_attention_mask is not None:
        vision_mask = vision_attention_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1)
        text_attn_weights.masked_fill_(vision_mask, float("-inf"))
    text_attn_weights = text_attn_weights.softmax(dim=-1)  # [B*heads, T, N]
    if text_attention_mask is not None:
        text_mask = text_attention_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1)
        attn_weights.masked_fill_(text_mask, float("-inf"))
    vision_attn_weights = attn_weights.softmax(dim=-1)  # [B*heads, N, T]

    # image output [B, N, 256] = sum_h P_h (V_h Wo_h^T) + bo
    out_weight = self.out_vision_proj.weight.to(dtype).view(-1, heads, head_dim)  # [256, heads, hd]
    value_out = torch.einsum("bhtd,ohd->bhto", text_values, out_weight).reshape(batch, heads * texts, -1)
    probs = vision_attn_weights.reshape(batch, heads, tokens, texts).permute(0, 2, 1, 3).reshape(batch, tokens, heads * texts)
    vision_attn_output = torch.baddbmm(self.out_vision_proj.bias.to(dtype).expand(batch, 1, -1), probs, value_out)

    # text output [B, T, 1024] = (P'_h X) Wv_h^T + bv_h, then transformers' output projection
    value_weight, value_bias = per_head(self.values_vision_proj)
    pooled = torch.bmm(text_attn_weights.reshape(batch, heads * texts, tokens), vision_features).view(batch, heads, texts, -1)
    text_attn_output = torch.einsum("bhti,hdi->bthd", pooled, value_weight) + value_bias
    text_attn_output = self.out_text_proj(text_attn_output.reshape(batch, texts, heads * head_dim))
    return (vision_attn_output, vision_attn_weights), (text_attn_output, text_attn_weights)


def use_folded_fusion_attention(model: torch.nn.Module) -> int:
    """Switch every ``GroundingDinoBiMultiHeadAttention`` of a Grounding DINO model; returns how many."""
    return sum(
        replace_forward(module, folded_fusion_forward)
        for module in model.modules()
        if type(module).__name__ == "GroundingDinoBiMultiHeadAttention"
    )
