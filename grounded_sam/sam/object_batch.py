"""A frame's tracked objects through memory attention and the mask decoder together, as Meta's predictor runs them.

transformers' video models (SAM 2, EdgeTAM, SAM 3's tracker) run each object of a frame on its own: one memory
attention and one mask decode per object, a batch of one. Meta's ``SAM2VideoPredictor`` batches them. Here the
objects tracked from memory on a frame (no prompt on it) whose memories have the same shape (the same frames and
pointers: objects found together stay together) run as one batch; an object prompted on the frame runs alone, as
before. Every step is per batch item, so the results are the one-at-a-time path's to float rounding
(``test_objects_batched_match_one_at_a_time``). On a 2-core CPU a batch of 4 memory attentions took 0.90-0.98x the
time of 4 alone; a GPU is where it pays (one launch of each kernel for all objects).
"""

from __future__ import annotations

from typing import Any

import torch

# Objects decoded together at most: transformers' best-mask pick makes [n, n] full-size masks for a batch of n
# (4: 64 MiB at 1024 pixels, where 8 would be 256 MiB), of which each object keeps its own.
MAX_BATCH = 4


class ObjectBatching:
    """Mixin before a transformers SAM 2-style video model: ``batch_objects`` (default on) batches tracked objects."""

    batch_objects = True
    # SAM 2 and SAM 3's tracker: memory cast to the session's dtype, no spatial-memory count (EdgeTAM: the reverse)
    casts_memory = True
    counts_spatial_memories = False

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - the model's own forward, its batch reset
        self._tracked_batch: dict[int, dict[str, Any]] | None = None
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._tracked_batch = None

    def _run_single_frame_inference(self, inference_session, frame_idx, obj_idx, batch_size, is_init_cond_frame,  # noqa: ANN001, ANN201, PLR0913
                                    point_inputs, mask_inputs, reverse, *args, **kwargs):
        plain = not is_init_cond_frame and point_inputs is None and mask_inputs is None and kwargs.get("prev_sam_mask_logits") is None
        if plain and self.batch_objects and getattr(self, "_tracked_batch", None) is None and self.num_maskmem > 0:
            self._tracked_batch = self._track_together(inference_session, frame_idx, reverse, kwargs.get("streaming", False),
                                                       kwargs.get("run_mem_encoder", True))
        if plain and self._tracked_batch and obj_idx in self._tracked_batch:
            return self._tracked_batch.pop(obj_idx)
        return super()._run_single_frame_inference(inference_session, frame_idx, obj_idx, batch_size, is_init_cond_frame,
                                                   point_inputs, mask_inputs, reverse, *args, **kwargs)

    def _track_together(self, session, frame_idx: int, reverse: bool, streaming: bool, run_mem_encoder: bool) -> dict[int, dict]:  # noqa: ANN001
        """Each object tracked from memory on ``frame_idx`` (no new prompt, no prompted output there): its outputs, as
        ``_run_single_frame_inference`` gives them, computed in batches of objects whose memories agree in shape."""
        objects = [
            index for index in range(session.get_obj_num())
            if session.obj_idx_to_id(index) not in session.obj_with_new_inputs
            and frame_idx not in session.output_dict_per_obj[index]["cond_frame_outputs"]
        ]
        if len(objects) < 2:
            return {}
        features, positions = self._prepare_vision_features(session, frame_idx, 1)
        groups: dict[tuple, list] = {}
        for index in objects:
            memory, memory_positions, extra = self._object_memory(session, index, frame_idx, reverse, streaming, features[-1].device)
            groups.setdefault((tuple(memory.shape), tuple(sorted(extra.items()))), []).append((index, memory, memory_positions, extra))
        height, width = self.backbone_feature_sizes[-1]
        high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(features[:-1], self.backbone_feature_sizes[:-1], strict=True)]
        results: dict[int, dict[str, Any]] = {}
        batches = [group[start : start + MAX_BATCH] for group in groups.values() for start in range(0, len(group), MAX_BATCH)]
        for members in batches:
            count = len(members)
            conditioned = self.memory_attention(
                current_vision_features=features[-1].expand(-1, count, -1),
                current_vision_position_embeddings=positions[-1].expand(-1, count, -1),
                memory=torch.cat([m for _, m, _, _ in members], dim=1),
                memory_posision_embeddings=torch.cat([p for _, _, p, _ in members], dim=1),
                **members[0][3],
            )
            # out as [1, objects, tokens, channels]: each object's tokens to a [C, H, W] map, as the one-object step does
            pixel_features = conditioned.reshape(count, height * width, self.hidden_dim).transpose(1, 2).reshape(count, self.hidden_dim, height, width)
            decoded = self._single_frame_forward(
                pixel_values=None,
                image_embeddings=[x.expand(count, -1, -1, -1) for x in high_res] + [pixel_features],
                multimask_output=self._use_multimask(False, None),
            )
            for row, (index, *_rest) in enumerate(members):
                results[index] = self._object_outputs(decoded, row, count, features[-1], run_mem_encoder)
        return results

    def _object_memory(self, session, index: int, frame_idx: int, reverse: bool, streaming: bool, device) -> tuple:  # noqa: ANN001
        """One object's memory tokens ``[M, 1, C]``, their positions, and the memory attention's counts for them,
        gathered as the model's own ``_prepare_memory_conditioned_features`` gathers them."""
        gathered = self._gather_memory_frame_outputs(session, index, frame_idx, reverse)
        memories, memory_positions = self._build_memory_attention_inputs(gathered, device)
        extra = {"num_spatial_memory_tokens": len(memories)} if self.counts_spatial_memories else {}
        offsets, pointers, most = self._get_object_pointers(session, index, frame_idx, session.num_frames, device, reverse, streaming)
        extra["num_object_pointer_tokens"] = 0
        if pointers:
            pointer_tokens, pointer_positions = self._process_object_pointers(offsets, pointers, most, 1, self.hidden_dim, device)
            if pointer_tokens is not None:
                memories.append(pointer_tokens)
                memory_positions.append(pointer_positions)
                extra["num_object_pointer_tokens"] = pointer_tokens.shape[0]
        memory = torch.cat(memories, dim=0)
        if self.casts_memory:
            memory = memory.to(dtype=session.dtype)
        return memory, torch.cat(memory_positions, dim=0), extra

    def _object_outputs(self, decoded, row: int, count: int, current_features: torch.Tensor, run_mem_encoder: bool) -> dict[str, Any]:  # noqa: ANN001
        """Row ``row`` of a batched decode, as the one-object step stores it (EdgeTAM: its memory made here, alone)."""
        one = slice(row, row + 1)

        def own(tensor: torch.Tensor) -> torch.Tensor:
            # transformers picks each image's best mask with indices that broadcast to [images, images] when there is
            # more than one image: row i, column i is image i's choice (a batch of one gives [1, 1], as here)
            return tensor[one, one] if tensor.shape[1] == count > 1 else tensor[one]

        out = {"pred_masks": own(decoded.pred_masks), "object_pointer": own(decoded.object_pointer)}
        if self.counts_spatial_memories:  # EdgeTAM encodes each object's memory in its step
            features = positions = None
            if run_mem_encoder:
                features, positions = self._encode_new_memory(
                    current_vision_feats=current_features,
                    pred_masks_high_res=own(decoded.high_res_masks),
                    object_score_logits=decoded.object_score_logits[one],
                    is_mask_from_pts=False,
                )
            out["maskmem_features"], out["maskmem_pos_enc"] = features, positions
        else:  # SAM 2 and SAM 3 encode the frame's memories in one batch after every object's mask
            out["high_res_masks"] = own(decoded.high_res_masks)
        out["object_score_logits"] = decoded.object_score_logits[one]
        return out
