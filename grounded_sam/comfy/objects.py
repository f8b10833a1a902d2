"""What flows between this pack's nodes: the segment node's objects (masks packed) and the SAM model check."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import InputError
from ..records import Detections, PackedMasks
from ..sam.load import segmenter_from_meta_module
from ..sam.segmenter import SamSegmenter
from ..sam3.segmenter import Sam3Segmenter


def as_segmenter(sam_model) -> SamSegmenter | Sam3Segmenter:
    """Ours, or a ``segment_anything`` model from another pack (Impact Pack's SAMLoader) converted once."""
    if isinstance(sam_model, (SamSegmenter, Sam3Segmenter)):
        return sam_model
    if isinstance(sam_model, torch.nn.Module) and all(hasattr(sam_model, a) for a in ("image_encoder", "mask_decoder")):
        converted = getattr(sam_model, "_grounded_sam_segmenter", None)
        if converted is None:
            converted = segmenter_from_meta_module(sam_model)
            sam_model._grounded_sam_segmenter = converted
        return converted
    raise InputError(
        f"sam_model is a {type(sam_model).__name__}, not a SAM model this node can use: "
        "connect a 'SAMModelLoader (segment anything)' node"
    )


DETECTIONS = "GROUNDED_SAM_DETECTIONS"
# ComfyUI's core box type (0.33+: DrawBBoxes, CropByBBoxes, ...); older servers treat it as any other custom type name.
BOUNDING_BOX = "BOUNDING_BOX"


@dataclass(frozen=True)
class SegmentedObjects:
    """What flows on a ``GROUNDED_SAM_DETECTIONS`` socket: the objects, their masks at one bit a pixel.

    ComfyUI keeps every node output in its cache whether or not anything reads it; float32
    masks for hundreds of objects would cost gigabytes there. ``ObjectMasks`` unpacks them.
    """

    detections: Detections  # masks=None: they are in ``masks``
    masks: PackedMasks

    @classmethod
    def of(cls, found: Detections) -> SegmentedObjects:
        return cls(replace(found, masks=None), PackedMasks.pack(found.masks))

    @classmethod
    def join(cls, parts: list[SegmentedObjects], num_frames: int, image_size: tuple[int, int]) -> SegmentedObjects:
        """Per-frame parts (``frame_index`` set) as one clip's objects, masks still packed."""
        found = Detections.concat([p.detections for p in parts], num_frames, image_size)
        return cls(found, PackedMasks.concat([p.masks for p in parts], image_size))

    def object_masks(self) -> torch.Tensor:
        """float32 ``[N, H, W]``, one per object; one all-zero mask when there is none (ComfyUI has no empty batch)."""
        if len(self.masks) == 0:
            return torch.zeros((1, *self.detections.image_size))
        return self.masks.unpack().float()

    def select(self, rows: torch.Tensor) -> SegmentedObjects:
        return SegmentedObjects(self.detections.select(rows), self.masks.select(rows))

    def rows_of(self, index: int) -> torch.Tensor:
        return (self.detections.frame_index == index).nonzero().flatten()

    def frame(self, index: int) -> Detections:
        """Frame ``index``'s objects as a one-frame record, their masks unpacked (only that frame's)."""
        return self.detections.for_frame(index).with_masks(self.masks.select(self.rows_of(index)).unpack())

    def merged_masks(self) -> torch.Tensor:
        """float32 ``[B, H, W]``: every frame's objects in one mask, frame by frame (merged while packed)."""
        merged = torch.zeros((self.detections.num_frames, *self.detections.image_size))
        for index in self.detections.frame_index.unique().tolist():
            merged[index] = self.masks.union(self.rows_of(index)).float()
        return merged

    def bounding_boxes(self) -> list[list[dict]]:
        """ComfyUI's core BOUNDING_BOX layout: per frame, ``{x, y, width, height, score, label}`` in pixels."""
        frames: list[list[dict]] = [[] for _ in range(self.detections.num_frames)]
        found = self.detections
        for i in range(len(found)):
            x0, y0, x1, y1 = found.boxes[i].tolist()
            box = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "score": float(found.scores[i]), "label": found.labels[i]}
            if found.track_id is not None:
                box["track_id"] = int(found.track_id[i])
            frames[int(found.frame_index[i])].append(box)
        return frames


def segmented(detections) -> SegmentedObjects:
    if not isinstance(detections, SegmentedObjects):
        raise InputError("detections must come from a 'GroundingDinoSAMSegment (segment anything)' node")
    return detections
