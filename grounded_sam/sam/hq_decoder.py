"""HQ-SAM mask decoding in the original order, using transformers' own HQ-SAM modules.

transformers 5.23's ``SamHQMaskDecoder.forward`` upsamples the image embeddings from
*before* the two-way transformer (it discards the transformer's updated embeddings), so
its masks differ from HQ-SAM's. This runs the same submodules with the original data flow;
the parity test against ``segment_anything_hq`` pins it.
"""

from __future__ import annotations

import torch
from transformers import SamHQModel


def hq_low_res_masks(
    model: SamHQModel,
    image_embeddings: torch.Tensor,
    intermediate: tuple[torch.Tensor, ...],
    boxes: torch.Tensor,
    hq_token_only: bool,
) -> torch.Tensor:
    """``[n, 256, 256]`` mask logits for ``boxes`` ``[n, 4]`` (encoder-frame pixels) on one image."""
    dec = model.mask_decoder
    act = dec.activation
    sparse, dense = model.prompt_encoder(input_points=None, input_labels=None, input_boxes=boxes[None], input_masks=None)
    n = sparse.shape[1]
    _, channels, height, width = image_embeddings.shape

    vit = intermediate[0].permute(0, 3, 1, 2)
    hq_features = dec.encoder_conv2(act(dec.encoder_norm(dec.encoder_conv1(image_embeddings))))
    hq_features = hq_features + dec.compress_vit_conv2(act(dec.compress_vit_norm(dec.compress_vit_conv1(vit))))

    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hq_token.weight], dim=0)
    tokens = torch.cat([tokens.repeat(1, n, 1, 1), sparse], dim=2).to(dec.iou_token.weight.dtype)
    src = (image_embeddings + dense).repeat_interleave(n, 0)
    positions = model.get_image_wide_positional_embeddings().repeat_interleave(n, 0)
    queries, keys = dec.transformer(
        point_embeddings=tokens,
        image_embeddings=src,
        image_positional_embeddings=positions,
        attention_similarity=None,
        target_embedding=None,
    )[:2]
    mask_tokens = queries[0, :, 1 : 1 + dec.num_mask_tokens, :]  # [n, tokens, C]
    src = keys.transpose(2, 3).reshape(n, channels, height, width)

    upscaled = act(dec.upscale_conv2(act(dec.upscale_layer_norm(dec.upscale_conv1(src)))))
    upscaled_hq = dec.mask_conv2(act(dec.mask_norm(dec.mask_conv1(upscaled)))) + hq_features.repeat(n, 1, 1, 1)

    hq_logits = _apply(dec.hq_mask_mlp(mask_tokens[:, -1]), upscaled_hq)
    if hq_token_only:
        return hq_logits
    return _apply(dec.output_hypernetworks_mlps[0](mask_tokens[:, 0]), upscaled) + hq_logits


def _apply(hyper: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    return (hyper.unsqueeze(1) @ features.view(n, c, h * w)).view(n, h, w)
