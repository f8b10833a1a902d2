"""SAM 2's memory, carried frame to frame over a stream, holding only the frames its memory reads.

transformers' ``Sam2VideoInferenceSession`` keeps every frame's pixels and every frame's outputs
for as long as it lives. A clip of any length must not, so after each frame this keeps:
- no pixels and no image features once a frame is done (the session would keep the last frame's
  features, 112 MiB at 1024, until the next frame replaced them), and no full-size mask logits
  (read only while the frame's memory is encoded);
- per object, its prompted (conditioning) frame, and the last ``MEMORY_FRAMES`` tracked frames:
  SAM 2 reads 6 previous frames' memories and up to 16 frames' object pointers, nothing older.
What is dropped is never read again, so results equal an unpruned session's.

Objects can be added on any frame (a new detection) and dropped (a matched duplicate, an
ended track), which transformers' session does not offer: ``_renumber`` keeps its maps in step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import EdgeTamVideoModel, Sam2VideoModel
from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoInferenceSession
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from ..sam.sam2_segmenter import VideoFrame, video_pixels

# Frames of per-object outputs kept behind the current one: SAM 2 reads at most 16 back (object pointers).
MEMORY_FRAMES = 16
# Objects upsampled to full size together: 8 at 1280x720 are 29 MB of float logits, where 50 were 184 MB.
UPSAMPLE_GROUP = 8


class Propagation:
    """One pass of SAM 2's memory over frames in one direction (forward, or backward for ``reverse``).

    ``model`` is SAM 2's video model, EdgeTAM's or SAM 3's tracker (the same memory, read by transformers' same code).
    ``read_frame`` gives what it reads of a frame; by default SAM 2's pixels, its own encoder run in the pass.
    """

    def __init__(
        self,
        model: Sam2VideoModel | EdgeTamVideoModel,
        frame_size: tuple[int, int],
        reverse: bool = False,
        read_frame: Callable[[torch.Tensor], VideoFrame] | None = None,
    ) -> None:
        self.model = model
        self.frame_size = frame_size
        self.reverse = reverse
        self.image_size = int(model.config.image_size)
        self.read_frame = read_frame or (lambda frame: VideoFrame(video_pixels(frame, self.image_size)))
        device = next(model.parameters()).device
        # SAM 2 and SAM 3's tracker encode a frame's memories in one call after every object's mask, and can wait for
        # ``encode``; EdgeTAM encodes each object's as it goes (each from its own mask alone)
        self.defers_memory = hasattr(model, "_batch_encode_memories")
        session_class = EdgeTamVideoInferenceSession if isinstance(model, EdgeTamVideoModel) else Sam2VideoInferenceSession
        self.encoded: dict | None = None  # the last frame stepped: its image features, as the session caches them
        self.session = session_class(
            video_height=frame_size[0],
            video_width=frame_size[1],
            inference_device=device,
            inference_state_device=device,
            video_storage_device=device,
            dtype=torch.float32,
        )

    def add_boxes(self, frame_index: int, object_ids: list[int], boxes: torch.Tensor) -> None:
        """Objects prompted by pixel xyxy ``boxes`` on ``frame_index`` (the next frame ``step`` is given)."""
        h, w = self.frame_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        coords = (boxes.float() / scale * self.image_size).reshape(-1, 1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int32)
        for object_id, corner in zip(object_ids, coords, strict=True):
            index = self.session.obj_id_to_idx(object_id)
            self.session.add_point_inputs(index, frame_index, {"point_coords": corner.unsqueeze(0), "point_labels": labels.unsqueeze(0)})
        self.session.obj_with_new_inputs = [*self.session.obj_with_new_inputs, *object_ids]

    @torch.inference_mode()
    def step(
        self, frame_index: int, frame: torch.Tensor, encode: bool = True, features: dict | None = None
    ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Every object's mask logits on one uint8 ``[H, W, 3]`` frame: (object ids, ``[N, 256, 256]`` logits,
        ``[N]`` object-score logits, > 0 where the object is present).

        With ``encode`` false the frame's memories wait for ``encode``: objects dropped before it (a fresh
        detection that duplicates a track) never reach the memory encoder, which in SAM 3 weighs every
        object of a prompted frame against the others. ``features``: the frame's encoding as an earlier pass
        left it (``encoded``), so its image encoder does not run again.
        """
        self.encoded = None
        if not self.session.obj_ids:
            return [], torch.zeros((0, 1, 1)), torch.zeros(0)
        # a frame encoded already: the session reads its features and never its pixels (a placeholder stands in)
        read = self.read_frame(frame) if features is None else VideoFrame(torch.zeros((3, 1, 1)), features)
        pixels = read.pixels.to(self.session.inference_device)
        if read.features is not None:
            self.session.cache.cache_vision_features(frame_index, read.features)
        deferred = {"run_mem_encoder": encode} if self.defers_memory else {}
        out = self.model(inference_session=self.session, frame_idx=frame_index, frame=pixels, reverse=self.reverse, **deferred)
        self.encoded = self.session.cache.get_vision_features(frame_index)
        if encode or not self.defers_memory:
            self._forget(frame_index)
        return list(out.object_ids), out.pred_masks[:, 0].float().cpu(), out.object_score_logits.reshape(-1).float().cpu()

    @torch.inference_mode()
    def encode(self, frame_index: int) -> None:
        """The memories of ``frame_index`` (stepped with ``encode`` false) for the objects still in the session, in
        one call as the model's own step makes them: prompted on the frame or tracked to it, per object."""
        if not self.defers_memory:  # made in the step already
            return
        session = self.session
        rows, masks, scores, prompted = [], [], [], []
        for index in range(session.get_obj_num()):
            outputs = session.output_dict_per_obj[index]
            conditioning = frame_index in outputs["cond_frame_outputs"]
            stored = outputs["cond_frame_outputs" if conditioning else "non_cond_frame_outputs"].get(frame_index)
            if stored is None or "high_res_masks" not in stored:
                continue
            rows.append(index)
            masks.append(stored["high_res_masks"])
            scores.append(stored["object_score_logits"])
            prompted.append(conditioning)
        if self.model.num_maskmem > 0:
            self.model._batch_encode_memories(session, frame_index, rows, masks, scores, prompted)
        self._forget(frame_index)

    def full_size(self, logits: torch.Tensor) -> torch.Tensor:
        """bool ``[N, H, W]`` masks from low-resolution logits, upscaled as Meta's predictor does (bilinear, > 0).

        A few objects at a time: the full-size float logits (4 bytes a pixel an object) never exist for all at once.
        """
        masks = torch.zeros((len(logits), *self.frame_size), dtype=torch.bool)
        for start in range(0, len(logits), UPSAMPLE_GROUP):
            group = logits[start : start + UPSAMPLE_GROUP].unsqueeze(1)
            masks[start : start + len(group)] = F.interpolate(group, self.frame_size, mode="bilinear", align_corners=False)[:, 0] > 0.0
        return masks

    def drop(self, object_ids: list[int]) -> None:
        """Forget these objects entirely (their memory too)."""
        gone = set(object_ids)
        if gone & set(self.session.obj_ids):
            _renumber(self.session, [i for i in self.session.obj_ids if i not in gone])

    def rename(self, old: int, new: int) -> None:
        session = self.session
        index = session._obj_id_to_idx.pop(old)
        session._obj_id_to_idx[new] = index
        session._obj_idx_to_id[index] = new
        session._obj_id_to_idx = OrderedDict(sorted(session._obj_id_to_idx.items(), key=lambda kv: kv[1]))
        session.obj_ids = list(session._obj_id_to_idx)
        session.obj_with_new_inputs = [new if i == old else i for i in session.obj_with_new_inputs]

    def _forget(self, frame_index: int) -> None:
        session = self.session
        # the frame's pixels and image features (12 and 112 MiB at 1024): no later frame reads them
        session.cache.clear_all()
        if session.processed_frames:
            session.processed_frames.clear()
        for index, outputs in session.output_dict_per_obj.items():
            for stored in (*outputs["cond_frame_outputs"].values(), *outputs["non_cond_frame_outputs"].values()):
                stored.pop("high_res_masks", None)  # 4 MB a frame: read only by this frame's memory encoding
            tracked = outputs["non_cond_frame_outputs"]
            for old in [f for f in tracked if abs(f - frame_index) > MEMORY_FRAMES]:
                del tracked[old]
            seen = session.frames_tracked_per_obj[index]
            for old in [f for f in seen if abs(f - frame_index) > MEMORY_FRAMES]:
                del seen[old]


def _renumber(session: Sam2VideoInferenceSession, keep: list[int]) -> None:
    """Keep only the objects ``keep`` (ids), renumbering the session's per-object state to 0..len-1."""
    old_index = [session._obj_id_to_idx[i] for i in keep]
    for name in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj"):
        table = getattr(session, name)
        setattr(session, name, {new: table[old] for new, old in enumerate(old_index)})
    session._obj_id_to_idx = OrderedDict((object_id, new) for new, object_id in enumerate(keep))
    session._obj_idx_to_id = OrderedDict((new, object_id) for new, object_id in enumerate(keep))
    session.obj_ids = list(keep)
    session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i in session._obj_id_to_idx]
