"""SAM 3's video tracker: transformers' ``Sam3TrackerVideoModel``, with two steps of its memory made as Meta's.

- SAM 3's memory encoder reads a 1152x1152 mask (its 72x72 grid times 16) of a 1008x1008 frame. Meta
  turns the mask logits into the memory's input first (binary where the mask came from a box or a
  click, else their sigmoid; then times 20 minus 10) and resizes that (bilinear, antialiased), so its
  edges stay soft; transformers resizes the logits and binarises after. (SAM 2 needs no resize: 1024
  is 64 times 16.)
- On a frame where objects were prompted, Meta encodes every object's memory from masks that overlap
  nowhere (at each pixel only the object with the highest logit keeps it; the others are held at or
  below -10); transformers lets them overlap.

Measured on random weights, two overlapping objects on the shared clip: with transformers' steps the
next frame's masks were at IoU 0.85 and 0.90 of Meta's ``Sam3TrackerPredictor``; with only the
overlap step as Meta's, 0.96 and 0.89; with both, logits within 5e-6 (``test_sam3_tracker_matches_meta_tracker``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Sam3TrackerVideoModel

from ..sam.object_batch import ObjectBatching

# A logit no object reaches where another object wins the pixel: sigmoid(-10) is 4.5e-5.
OUTVOTED = -10.0


class Sam3Tracker(ObjectBatching, Sam3TrackerVideoModel):
    """``Sam3TrackerVideoModel`` whose memory reads the masks as Meta's tracker makes them."""

    def _batch_encode_memories(
        self,
        inference_session,  # noqa: ANN001 - transformers' Sam3TrackerVideoInferenceSession
        frame_idx: int,
        objects_needing_memory_encoding: list[int],
        high_res_masks_for_memory: list[torch.Tensor],
        object_score_logits_for_memory: list[torch.Tensor],
        is_mask_from_pts_per_obj: list[bool],
    ) -> None:
        masks = high_res_masks_for_memory
        if any(is_mask_from_pts_per_obj) and len(masks) > 1:
            masks = list(without_overlap(torch.cat(masks)).split(1))
        super()._batch_encode_memories(
            inference_session, frame_idx, objects_needing_memory_encoding, masks, object_score_logits_for_memory, is_mask_from_pts_per_obj
        )

    def _encode_new_memory(
        self,
        current_vision_feats: torch.Tensor,
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if is_mask_from_pts and not self.training:
            mask = (pred_masks_high_res > 0).to(pred_masks_high_res.dtype)
        else:
            mask = torch.sigmoid(pred_masks_high_res)
        mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        height, width = self.prompt_encoder.mask_input_size
        if mask.shape[2:] != (4 * height, 4 * width):
            resized = F.interpolate(mask.float(), size=(4 * height, 4 * width), mode="bilinear", align_corners=False, antialias=True)
            mask = resized.to(pred_masks_high_res.dtype)
        # from here on as transformers does it
        batch = current_vision_feats.size(1)
        grid_h, grid_w = self.backbone_feature_sizes[-1]
        pixels = current_vision_feats.permute(1, 2, 0).view(batch, self.hidden_dim, grid_h, grid_w)
        features, positions = self.memory_encoder(pixels, mask)
        if self.occlusion_spatial_embedding_parameter is not None:
            absent = 1 - (object_score_logits > 0).float()
            features += absent[..., None] * self.occlusion_spatial_embedding_parameter[..., None, None].expand(*features.shape)
        # stored as transformers and Meta store it: bfloat16, flattened to [HW, B, C]
        features = features.to(torch.bfloat16).flatten(2).permute(2, 0, 1)
        return features, positions.to(pred_masks_high_res.dtype).flatten(2).permute(2, 0, 1)


def without_overlap(logits: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` logits where each pixel is kept only by the object with the highest logit there."""
    winner = logits.argmax(0, keepdim=True) == torch.arange(len(logits), device=logits.device).view(-1, 1, 1, 1)
    return torch.where(winner, logits, logits.clamp(max=OUTVOTED))
