"""A trimap from a coarse mask: sure foreground, sure background, and the band between them to refine."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOREGROUND, UNKNOWN, BACKGROUND = 1.0, 0.5, 0.0
# Band widths are given for a frame whose long side is this many pixels, and scaled to the frame's own size.
REFERENCE_SIDE = 1024


def scaled_width(pixels: float, shape: tuple[int, int]) -> int:
    """``pixels`` at ``REFERENCE_SIDE`` as pixels of a frame of ``shape``: at least 1 when asked for any."""
    if pixels <= 0:
        return 0
    return max(1, round(pixels * max(shape) / REFERENCE_SIDE))


def make_trimap(mask: np.ndarray, erode: float, dilate: float) -> np.ndarray:
    """float ``[H, W]``: 1 inside the mask farther than ``erode`` pixels from its edge, 0 outside farther than
    ``dilate``, 0.5 in the band between (both widths scaled with ``scaled_width``, and narrowed where a side
    is thinner than its band, so that each side keeps some sure pixels)."""
    mask = np.asarray(mask, dtype=bool)
    inner, outer = scaled_width(erode, mask.shape), scaled_width(dilate, mask.shape)
    trimap = np.full(mask.shape, UNKNOWN, dtype=np.float64)
    # distance of each pixel to the nearest pixel of the other side: exact bands in O(pixels), whatever their width
    inside = ndimage.distance_transform_edt(mask) if mask.any() else np.zeros(mask.shape)
    outside = ndimage.distance_transform_edt(~mask) if (~mask).any() else np.zeros(mask.shape)
    # A band never takes a whole side: a mask that leaves only a thin margin of background (or is itself thin)
    # keeps that side's farthest pixels sure, or the solvers would have nothing to tell them what it looks like.
    if mask.any():
        inner = min(inner, int(np.ceil(inside.max())) - 1)
    if (~mask).any():
        outer = min(outer, int(np.ceil(outside.max())) - 1)
    trimap[mask & (inside > inner)] = FOREGROUND
    trimap[~mask & (outside > outer)] = BACKGROUND
    return trimap
