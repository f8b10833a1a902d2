"""Clicks that fix what a prompt found, or segment what it missed, beside the text pipeline.

A click refines the detected object whose box holds it (the smallest such box): that object is
segmented again from its box and its clicks. Positive clicks no box holds make one more object of
their own (labelled ``CLICKED``), with the negative clicks no box holds; its score is SAM's
predicted IoU and its box is its mask's. ``segment_clicks`` does the same without a detector:
clicks alone, or clicks on boxes a host already has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .clicks import Clicks, owners
from .errors import InputError
from .media.images import to_uint8_frames
from .records import Detections
from .runtime.run_hooks import FrameSteps, RunHooks
from .stages import Segmenter

CLICKED = "clicked"  # the label of the object made from clicks no box holds


def mask_box(mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """float ``[4]`` pixel xyxy around a bool ``[H, W]`` mask; ``fallback`` when it is empty."""
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return fallback
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def with_clicks(
    segmenter: Segmenter, embedding, found: Detections, clicks: Clicks, on_chunk: Callable[[int, int], None] | None = None
) -> Detections:
    """``found`` (one frame, with masks) with the objects holding a click segmented again from their box and clicks,
    and one more object from the positive clicks no box holds."""
    clicks.check_inside(found.image_size)
    owner = owners(clicks, found.boxes)
    rows = owner.unique()
    rows = rows[rows >= 0]
    if len(rows):
        masks = found.masks.clone()
        masks[rows] = segmenter.masks_for_clicks(embedding, [clicks.select(owner == r) for r in rows.tolist()], found.boxes[rows], on_chunk)[0]
        found = found.with_masks(masks)
    loose = clicks.select(owner < 0)
    if not loose.positive.any():
        return found
    mask, score = segmenter.masks_for_clicks(embedding, [loose])
    spot = loose.coords[loose.positive]
    fallback = torch.cat([spot.min(dim=0).values, spot.max(dim=0).values + 1])
    clicked = Detections(
        boxes=mask_box(mask[0], fallback)[None],
        scores=score.clamp(0.0, 1.0),
        labels=(CLICKED,),
        frame_index=torch.zeros(1, dtype=torch.int64),
        image_size=found.image_size,
        num_frames=found.num_frames,
        masks=mask,
        phrase_index=torch.full((1,), -1, dtype=torch.int64),
    )
    return Detections.concat([found, clicked], found.num_frames, found.image_size)


def segment_clicks(
    segmenter: Segmenter,
    image: torch.Tensor | np.ndarray,
    clicks: Clicks,
    boxes: list[torch.Tensor] | None = None,
    hooks: RunHooks | None = None,
) -> Detections:
    """Objects from clicks (and from ``boxes``: pixel xyxy ``[N, 4]`` per frame), the same clicks on every frame.

    Each box is an object (labelled "box", score 1), refined by the clicks it holds; positive clicks
    no box holds make one ``CLICKED`` object. No clicks and no boxes is an error, said before any model runs.
    """
    frames = to_uint8_frames(image)
    total, size = frames.shape[0], (int(frames.shape[1]), int(frames.shape[2]))
    clicks.check_inside(size)
    if boxes is not None and len(boxes) not in (1, total):
        raise InputError(f"{len(boxes)} lists of boxes for {total} frames: give one list per frame, or one for all of them")
    if not clicks.positive.any() and (boxes is None or all(len(b) == 0 for b in boxes)):
        raise InputError("nothing to segment: give at least one positive point or one box")
    hooks = hooks or RunHooks()
    parts = []
    for index in range(total):
        steps = FrameSteps(hooks, index, total)
        steps.check()
        frame_boxes = torch.zeros((0, 4)) if boxes is None else boxes[index if len(boxes) > 1 else 0].float().reshape(-1, 4)
        steps.plan_segmentation(len(frame_boxes) + 1)
        with steps.encoder(segmenter.encoder_module()):
            embedding = segmenter.embed(frames[index])
        found = Detections(
            boxes=frame_boxes,
            scores=torch.ones(len(frame_boxes)),
            labels=("box",) * len(frame_boxes),
            frame_index=torch.zeros(len(frame_boxes), dtype=torch.int64),
            image_size=size,
            num_frames=1,
            masks=segmenter.masks_for_boxes(embedding, frame_boxes),
            phrase_index=torch.full((len(frame_boxes),), -1, dtype=torch.int64),
        )
        found = with_clicks(segmenter, embedding, found, clicks, on_chunk=steps.chunk_decoded)
        parts.append(replace(found.clipped_to_image(), frame_index=torch.full((len(found),), index, dtype=torch.int64)))
        steps.finish()
    return Detections.concat(parts, total, size)
