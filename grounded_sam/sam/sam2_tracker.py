"""SAM 2 / 2.1's video memory: transformers' ``Sam2VideoModel``, each object's memory encoded as Meta's.

SAM 2 makes a frame's memory of an object from its mask: binarised where the mask came from a box or a
click on that frame, else the mask's sigmoid. transformers encodes every object of a frame in one batch
with one choice for all (``any`` object prompted), so on a frame where a new object is prompted (every
detection frame of a tracked clip) each object already tracked has its memory made from a binarised
mask too. Meta's ``SAM2VideoPredictor`` makes the choice per object. Measured on random SAM 2.1 tiny
weights, object 1 tracked from frame 0 and two objects prompted on frame 5: with transformers' batch
choice, object 1's memory features of frame 5 differed by up to 0.82 (of 2.2), and its logits on the
next six frames by up to 2.0e-3 from Meta's (mask IoU 0.9972); encoded per choice, within 1e-6
(``test_sam21_memory_past_its_window_with_objects_added_and_removed_matches_meta``).
"""

from __future__ import annotations

import torch
from transformers import Sam2VideoModel

from .object_batch import ObjectBatching


class Sam2Tracker(ObjectBatching, Sam2VideoModel):
    """``Sam2VideoModel`` whose objects prompted on a frame and objects tracked to it are encoded apart, and whose
    tracked objects run together (``object_batch``)."""

    def _batch_encode_memories(
        self,
        inference_session,  # noqa: ANN001 - transformers' Sam2VideoInferenceSession
        frame_idx: int,
        objects_needing_memory_encoding: list[int],
        high_res_masks_for_memory: list[torch.Tensor],
        object_score_logits_for_memory: list[torch.Tensor],
        is_mask_from_pts_per_obj: list[bool],
    ) -> None:
        for prompted in (True, False):  # one batch per choice (a single batch where all objects agree)
            rows = [i for i, flag in enumerate(is_mask_from_pts_per_obj) if flag == prompted]
            if rows:
                super()._batch_encode_memories(
                    inference_session,
                    frame_idx,
                    [objects_needing_memory_encoding[i] for i in rows],
                    [high_res_masks_for_memory[i] for i in rows],
                    [object_score_logits_for_memory[i] for i in rows],
                    [prompted] * len(rows),
                )
