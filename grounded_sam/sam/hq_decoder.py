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
    boxes: torch.Tensor | None,
    hq_token_only: bool,
    points: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    multimask: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, 256, 256]`` mask logits and the predicted IoU ``[n]`` for ``n`` prompts on one image: ``boxes``
    ``[n, 4]`` and/or ``points`` ``[n, P, 2]`` with ``labels`` ``[n, P]`` (encoder-frame pixels).

    ``multimask``: the best of SAM's three masks by predicted IoU, plus HQ's, as HQ-SAM's
    ``multimask_output=True`` (for a single click); otherwise SAM's single mask plus HQ's."""
    dec = model.mask_decoder
    act = dec.activation
    sparse, dense = model.prompt_encoder(
        input_points=None if points is None else points[None],
        input_labels=None if labels is None else labels[None],
        input_boxes=None if boxes is None else boxes[None],
        input_masks=None,
    )
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
    iou = dec.iou_prediction_head(queries[0, :, 0, :])  # [n, SAM's 4 mask tokens]
    if multimask:
        iou, best = iou[:, 1:].max(dim=1)
        sam_tokens = mask_tokens[torch.arange(n), 1 + best]
    else:
        iou, sam_tokens = iou[:, 0], mask_tokens[:, 0]
    src = keys.transpose(2, 3).reshape(n, channels, height, width)

    upscaled = act(dec.upscale_conv2(act(dec.upscale_layer_norm(dec.upscale_conv1(src)))))
    upscaled_hq = dec.mask_conv2(act(dec.mask_norm(dec.mask_conv1(upscaled)))) + hq_features.repeat(n, 1, 1, 1)

    hq_logits = _apply(dec.hq_mask_mlp(mask_tokens[:, -1]), upscaled_hq)
    if hq_token_only:
        return hq_logits, iou
    if multimask:  # each prompt's own hypernetwork: its best mask token's
        hyper = torch.stack([dec.output_hypernetworks_mlps[int(k)](sam_tokens[i]) for i, k in enumerate(1 + best)])
    else:
        hyper = dec.output_hypernetworks_mlps[0](sam_tokens)
    return _apply(hyper, upscaled) + hq_logits, iou


def _apply(hyper: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    return (hyper.unsqueeze(1) @ features.view(n, c, h * w)).view(n, h, w)
