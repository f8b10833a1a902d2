"""``PointsSegment (segment anything)``: masks from clicks (and boxes), for any SAM this pack loads.

Points come in ComfyUI core's JSON (``[{"x": 120, "y": 80}, ...]``, pixels), what KJNodes'
``PointsEditor`` writes and core ``SAM3_Detect`` reads; boxes in core's ``BOUNDING_BOX`` layout.
"""

from __future__ import annotations

import torch

from ..click_refinement import segment_clicks
from ..clicks import Clicks, points_from_json
from ..errors import InputError
from ..media.images import to_uint8_frames
from ..runtime.run_hooks import STEPS_PER_FRAME, RunHooks
from . import adapter
from .objects import BOUNDING_BOX, DETECTIONS, SegmentedObjects, as_segmenter

POINTS_TOOLTIP = 'pixels, as ComfyUI core\'s points: [{"x": 120, "y": 80}, ...] (KJNodes\' PointsEditor writes them)'


def clicks_from_sockets(positive_coords: str, negative_coords: str) -> Clicks:
    return Clicks.of(points_from_json(positive_coords, "positive_coords"), points_from_json(negative_coords, "negative_coords"))


def boxes_from_core(bboxes, frames: int) -> list[torch.Tensor]:
    """Core ``BOUNDING_BOX`` (``{x, y, width, height}`` dicts: one list per frame, or one list for every frame) as xyxy per frame."""

    def xyxy(rows) -> torch.Tensor:
        if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) and {"x", "y", "width", "height"} <= set(r) for r in rows):
            raise InputError("bboxes must be ComfyUI boxes: [{x, y, width, height}, ...] per frame (the segment node's bboxes output)")
        return torch.tensor([[r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"]] for r in rows], dtype=torch.float32).reshape(-1, 4)

    if isinstance(bboxes, dict):
        bboxes = [bboxes]
    if isinstance(bboxes, (list, tuple)) and bboxes and all(isinstance(b, (list, tuple)) for b in bboxes):
        if len(bboxes) not in (1, frames):
            raise InputError(f"{len(bboxes)} lists of boxes for {frames} frames: give one list per frame, or one for all of them")
        return [xyxy(rows) for rows in bboxes]
    return [xyxy(bboxes)]


class PointsSegment:
    """Masks from clicks: on the object (positive) or off it (negative), optionally with boxes to refine."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam_model": ("SAM_MODEL", {}),
                "image": ("IMAGE", {}),
                "positive_coords": ("STRING", {"default": "", "tooltip": "clicks on the object: " + POINTS_TOOLTIP}),
                "negative_coords": ("STRING", {"default": "", "tooltip": "clicks off the object: " + POINTS_TOOLTIP}),
            },
            "optional": {
                "bboxes": (BOUNDING_BOX, {"tooltip": "objects to segment, refined by the clicks inside them (the smallest box holding a click)"}),
            },
        }

    CATEGORY = "segment_anything"
    FUNCTION = "main"
    RETURN_TYPES = ("MASK", DETECTIONS)
    RETURN_NAMES = ("MASK", "detections")
    OUTPUT_TOOLTIPS = (
        "one merged mask per frame",
        'every object: each box (label "box"), and the clicks no box holds (label "clicked"), for ObjectMasks, PickObjects, ToSEGS',
    )

    def main(self, sam_model, image, positive_coords, negative_coords, bboxes=None):
        segmenter = as_segmenter(sam_model)
        clicks = clicks_from_sockets(positive_coords, negative_coords)
        frames = to_uint8_frames(image)
        boxes = None if bboxes is None else boxes_from_core(bboxes, frames.shape[0])
        adapter.load_for_inference(segmenter)
        hooks = RunHooks(on_progress=adapter.progress_reporter(frames.shape[0] * STEPS_PER_FRAME), check_cancel=adapter.cancel_check())
        with adapter.library_numerics():
            found = segment_clicks(segmenter, frames, clicks, boxes, hooks)
        return (found.merged_masks().float(), SegmentedObjects.of(found))
