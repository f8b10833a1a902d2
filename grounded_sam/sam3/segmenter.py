"""SAM 3 in the SAM socket: its own detections' masks in one pass, or any detector's boxes segmented.

It joins two families, SAM 3's detector (``sam3/``) and SAM 2's mask decoding (``sam/``), so it lives
above both, beside the loaders that build it.

Boxes from another detector go through SAM 3's box-to-mask head as Meta's
``Sam3Image.predict_inst`` runs it: the detector's ViT output (cached per frame, shared with the
text path) through the tracker's neck, ``no_mem_embed`` added, then the SAM 2-style prompt encoder
and mask decoder (single-mask output). Like Meta's predictor, holes of up to 256 pixels in the
288x288 mask are filled (8-connected background regions, found with SciPy); masks are then
upscaled straight to the frame.

Tracking reads the same neck's three levels for every frame, as transformers' ``Sam3VideoModel`` shares
its detector's encoder with its tracker: the frame is encoded once for detection and tracking.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..runtime.caching import LruCache
from ..sam.sam2_segmenter import Sam2Segmenter, VideoFrame
from ..sam.segmenter import ImageEmbedding
from .detector import Sam3Detector
from .tracker import Sam3Tracker

# Box-head features per frame: ~21 MB (three levels at 288, 144 and 72 pixels square).
EMBEDDING_CACHE_SIZE = 2
# Meta's SAM3InteractiveImagePredictor: background regions this small in the low-resolution mask are holes.
MAX_HOLE_AREA = 256
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class Sam3Segmenter(Sam2Segmenter):
    """The mask stage of SAM 3: with the same SAM 3 as the detector, the detector's masks are the result."""

    def __init__(self, detector: Sam3Detector) -> None:  # the model is the detector's: no SamSegmenter set-up
        self.detector = detector
        self.model = detector.model
        self.name = detector.name
        self.is_hq = False
        self.image_size = detector.image_size
        self.embedding_cache: LruCache[ImageEmbedding] = LruCache(EMBEDDING_CACHE_SIZE)

    def module(self) -> torch.nn.Module:
        return self.detector.module()

    def caches(self) -> tuple[LruCache, ...]:
        return (*self.detector.caches(), self.embedding_cache)

    @property
    def video(self) -> Sam3Tracker | None:
        """SAM 3's tracker (video memory around the box-to-mask head); None when the file has no tracker."""
        return self.detector.video

    def _tracker_levels(self, frame: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The frame's ViT output (the detector's, cached per frame) through the tracker's neck: three levels, the two
        finer ones projected as the mask decoder reads them, and their position encodings."""
        head = self.detector.box_head
        trunk = self.detector.vision_features(frame).last_hidden_state  # [1, grid*grid, width]
        grid = self.image_size // self.model.config.vision_config.backbone_config.patch_size
        levels, positions = head.vision_encoder.neck(trunk.view(1, grid, grid, -1).permute(0, 3, 1, 2))
        decoder = head.mask_decoder
        return [decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1]), levels[2]], list(positions[:3])

    @torch.inference_mode()
    def _embed(self, frame: torch.Tensor) -> ImageEmbedding:
        head = self.detector.box_head
        if head is None:
            raise InputError(
                f"this {self.name} has no box-to-mask head (a transformers 'sam3' folder holds the detector only), "
                "so it cannot segment another detector's boxes: use Meta's sam3.pt or the facebook/sam3 folder, choose the same SAM 3 in the "
                "Grounding DINO loader, or a SAM / SAM 2 model here"
            )
        levels, _ = self._tracker_levels(frame)
        embeddings = levels[2] + head.no_memory_embedding.view(1, -1, 1, 1)
        size = (self.image_size, self.image_size)
        return ImageEmbedding(embeddings, (levels[0], levels[1]), size, (int(frame.shape[0]), int(frame.shape[1])))

    @torch.inference_mode()
    def video_frame(self, frame: torch.Tensor) -> VideoFrame:
        """One uint8 ``[H, W, 3]`` frame for the tracker: the detector's pixels, and its encoding as the tracker's
        session caches it (levels flattened to ``[HW, 1, C]``)."""
        levels, positions = self._tracker_levels(frame)
        flat = [level.flatten(2).permute(2, 0, 1) for level in levels]
        return VideoFrame(self.detector.preprocess(frame)[0], {"vision_feats": flat, "vision_pos_embeds": [p.flatten(2).permute(2, 0, 1) for p in positions]})

    def prompt_model(self) -> torch.nn.Module:
        return self.detector.box_head  # SAM 3's tracker head: SAM 2's prompt encoder and mask decoder

    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        return super()._upscale(fill_small_holes(low_res), embedding)


def fill_small_holes(logits: torch.Tensor, max_area: int = MAX_HOLE_AREA) -> torch.Tensor:
    """``logits`` ``[N, h, w]`` with every 8-connected background region of at most ``max_area`` pixels set
    to foreground (10.0), as Meta's predictor does (there with scikit-image or a CUDA kernel; here with SciPy)."""
    background = (logits <= 0.0).cpu().numpy()
    holes = np.zeros(background.shape, dtype=bool)
    for index, mask in enumerate(background):
        labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        if count:
            small = np.bincount(labels.ravel(), minlength=count + 1) <= max_area
            small[0] = False  # label 0: the mask itself
            holes[index] = small[labels]
    if not holes.any():
        return logits
    return logits.masked_fill(torch.from_numpy(holes).to(logits.device), 10.0)
