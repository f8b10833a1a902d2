"""Impact Pack's SEGS layout, made from our detections (no Impact or ComfyUI import).

Impact's detailers (``FaceDetailer``, ``Detailer (SEGS)``) and its SEGS nodes read a SEGS value:
``((H, W), [SEG, ...])`` for one image, each SEG holding the object's mask cut to a crop region
that is its box grown by ``crop_factor``. A SEG here is a namedtuple with Impact's field names and
order, so Impact's code reads it, sorts it and rebuilds it (``SEG(...)``, ``seg._replace``) as its
own. The crop region follows Impact's rule (centre of the box, sides times ``crop_factor``, pushed
back inside the image), so a detailer crops what it would crop for one of its own detectors.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..records import Detections
from ..selection.exclusion import inside_boxes

SEG = namedtuple(
    "SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"], defaults=[None]
)


def _span(limit: int, start: int, size: float) -> tuple[int, int]:
    """One side of a crop region: ``size`` pixels from ``start``, moved (not shrunk) to fit in ``[0, limit)``."""
    if start < 0:
        return 0, int(min(limit, size))
    if start + size > limit:
        return int(max(0, limit - size)), int(limit)
    return int(start), int(min(limit, start + size))


def crop_region(box: tuple[float, float, float, float], crop_factor: float, image_size: tuple[int, int]) -> list[int]:
    """``[x1, y1, x2, y2]``: the box's centre with its sides times ``crop_factor``, within the image (Impact's rule)."""
    h, w = image_size
    x0, y0, x1, y1 = box
    crop_w, crop_h = (x1 - x0) * crop_factor, (y1 - y0) * crop_factor
    left, right = _span(w, int(x0 + (x1 - x0) / 2 - crop_w / 2), crop_w)
    top, bottom = _span(h, int(y0 + (y1 - y0) / 2 - crop_h / 2), crop_h)
    return [left, top, right, bottom]


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """bool ``[N, H, W]`` grown by a square of side ``pixels`` (shrunk when negative), as Impact's ``dilation`` does.

    The square is anchored at its centre (``side // 2``), like OpenCV's, and the image border never
    erodes a mask, so a value gives the masks Impact's own detectors would give.
    """
    if pixels == 0 or masks.numel() == 0:
        return masks
    side = abs(int(pixels))
    before, after = side // 2, side - 1 - side // 2
    grow = masks if pixels > 0 else ~masks
    padded = F.pad(grow[:, None].float(), (before, after, before, after))
    grown = F.max_pool2d(padded, side, stride=1)[:, 0] > 0.5
    return grown if pixels > 0 else ~grown


def to_segs(
    found: Detections,
    crop_factor: float = 3.0,
    dilation: int = 0,
    drop_size: int = 1,
    image: torch.Tensor | None = None,
    boxes_only: bool = False,
    adjust_region: Callable[[int, int, list[float], list[int]], list[int]] | None = None,
) -> tuple[tuple[int, int], list[SEG]]:
    """Impact's SEGS for one frame's objects (``found`` from one frame, with masks unless ``boxes_only``).

    One SEG per object, in ``found``'s order: its mask (or filled box with ``boxes_only``) grown by
    ``dilation`` and cut to its crop region as float32, its score as the confidence, its box in
    pixels, and its label. An object whose box is not wider and taller than ``drop_size`` pixels is
    left out, as Impact's detectors do. ``image`` (float ``[1, H, W, 3]``) fills ``cropped_image``;
    ``adjust_region(w, h, bbox, region)`` (a detailer hook's ``post_crop_region``) may change a region.
    """
    if found.num_frames != 1:
        raise InputError(f"SEGS hold one image, these detections have {found.num_frames} frames: pick one frame first")
    if crop_factor < 1.0:
        raise InputError(f"crop_factor must be at least 1 (the crop holds the whole box), got {crop_factor}")
    size = found.image_size
    if image is not None and tuple(image.shape[1:3]) != tuple(size):
        raise InputError(
            f"the image is {image.shape[2]}x{image.shape[1]} but the objects were found in one of {size[1]}x{size[0]}: "
            "connect the image the objects were found in"
        )
    drop_size = max(int(drop_size), 1)
    keep = ((found.boxes[:, 2] - found.boxes[:, 0]) > drop_size) & ((found.boxes[:, 3] - found.boxes[:, 1]) > drop_size)
    if not boxes_only and found.masks is None:
        raise InputError("these detections have no masks: segment them first, or make box SEGS")
    segs = []
    for i in keep.nonzero().flatten().tolist():  # rows, not found.select(keep): that would copy every full-size mask
        box = found.boxes[i].tolist()
        region = crop_region(box, crop_factor, size)
        if adjust_region is not None:
            region = [int(v) for v in adjust_region(size[1], size[0], box, region)]
        x1, y1, x2, y2 = region
        # one object at a time, on its region: full-size masks for every object at once would cost N x H x W
        # (a box detector's mask is its filled box)
        mask = inside_boxes(found.boxes[i : i + 1], size)[0] if boxes_only else found.masks[i]
        mask = mask[y1:y2, x1:x2] if dilation == 0 else _dilated_crop(mask, dilation, region)
        cropped_image = None if image is None else image[:, y1:y2, x1:x2, :]
        segs.append(
            SEG(cropped_image, mask.numpy().astype(np.float32), np.float32(found.scores[i]), region, np.asarray(box, dtype=np.float32), found.labels[i])
        )
    return (int(size[0]), int(size[1])), segs


def _dilated_crop(mask: torch.Tensor, pixels: int, region: list[int]) -> torch.Tensor:
    """``mask`` (bool ``[H, W]``) dilated by ``pixels``, then cut to ``region``: computed on the region plus a margin."""
    h, w = mask.shape
    x1, y1, x2, y2 = region
    margin = abs(int(pixels))
    top, left = max(0, y1 - margin), max(0, x1 - margin)
    part = mask[top : min(h, y2 + margin), left : min(w, x2 + margin)]
    grown = dilate(part[None], pixels)[0]
    return grown[y1 - top : y2 - top, x1 - left : x2 - left]


def combined_mask(found: Detections, dilation: int = 0, boxes_only: bool = False) -> torch.Tensor:
    """float32 ``[H, W]``: every object of one frame in one mask, each grown by ``dilation`` (a detector's ``detect_combined``)."""
    if found.num_frames != 1:
        raise InputError(f"one image at a time: these detections have {found.num_frames} frames")
    merged = torch.zeros(found.image_size, dtype=torch.bool)
    for start in range(0, len(found), 16):  # a few full-size masks at a time (slices: views, not copies)
        masks = inside_boxes(found.boxes[start : start + 16], found.image_size) if boxes_only else found.masks[start : start + 16]
        # growing the union grows every mask (dilation distributes over union), so it is grown once below;
        # shrinking does not, so each mask shrinks on its own
        merged |= (dilate(masks, dilation) if dilation < 0 else masks).any(dim=0)
    return (dilate(merged[None], dilation)[0] if dilation > 0 else merged).float()
