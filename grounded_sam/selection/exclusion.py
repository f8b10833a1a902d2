"""Leave things out: "the person, not the bag".

The excluded phrases ride along in the same detection pass (appended to the prompt); which boxes
survive is ``box_selection``'s rule (suppression within each group, a kept box that is an excluded
box over again dropped). Then each excluded object removes, from every kept object's mask, the
pixels of its own mask that lie inside its own box: a mask that spills past its box does not cut
there. So an excluded object whose box holds no kept pixel cannot change anything, and its mask is
never computed (``can_cut``). The same holds once earlier cuts have removed every kept pixel in its
box, so ``cut_decoding_as_needed`` decodes the excluded masks a few at a time, best first, and asks
again before each group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..prompts import Prompt
from ..records import Detections

# Excluded masks made (and held at full size) per group before the kept pixels left are checked again.
CUT_GROUP = 8


def split_excluded(found: Detections, prompt: Prompt) -> tuple[Detections, Detections]:
    """(objects of the kept phrases, objects of the excluded phrases), by the phrase of each box."""
    if found.phrase_index is None:
        raise ValueError("exclusion needs the detector's phrase of each box")
    excluded = found.phrase_index >= len(prompt.kept)
    return found.select(~excluded), found.select(excluded)


def box_regions(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """int64 ``[N, 4]`` (x0, y0, x1, y1): the pixels a pixel-xyxy box covers, ``x0 <= x < x1``, within the frame."""
    h, w = image_size
    low = boxes[:, :2].floor().long()
    high = boxes[:, 2:].ceil().long()
    return torch.cat([low[:, :1].clamp(0, w), low[:, 1:].clamp(0, h), high[:, :1].clamp(0, w), high[:, 1:].clamp(0, h)], dim=1)


def inside_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """bool ``[N, H, W]``: each box's pixels."""
    h, w = image_size
    x0, y0, x1, y1 = box_regions(boxes, image_size).unbind(1)
    xs, ys = torch.arange(w), torch.arange(h)
    columns = (xs >= x0[:, None]) & (xs < x1[:, None])
    rows = (ys >= y0[:, None]) & (ys < y1[:, None])
    return rows[:, :, None] & columns[:, None, :]


def can_cut(excluded_boxes: torch.Tensor, kept_pixels: torch.Tensor) -> torch.Tensor:
    """bool ``[N]``: which excluded boxes hold a pixel of ``kept_pixels`` (bool ``[H, W]``, every kept mask merged)."""
    h, w = kept_pixels.shape
    table = torch.zeros((h + 1, w + 1), dtype=torch.int64)  # summed-area table: pixels in any box in O(1)
    table[1:, 1:] = kept_pixels.long().cumsum(0).cumsum(1)
    x0, y0, x1, y1 = box_regions(excluded_boxes, (h, w)).unbind(1)
    return (table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]) > 0


def cut_out(kept: Detections, excluded: Detections) -> Detections:
    """``kept`` without the pixels each excluded object's mask has inside its box. Both from one frame, with masks."""
    return cut_decoding_as_needed(kept, excluded, lambda part, _done: part.masks)


def cut_decoding_as_needed(kept: Detections, excluded: Detections, decode: Callable[[Detections, int], torch.Tensor]) -> Detections:
    """``cut_out(kept, excluded)``, each excluded mask made only while its box still holds a kept pixel that no
    earlier cut removed (the result is the same: such a mask's cut is made already).

    ``decode(part, done)`` gives bool ``[n, H, W]`` masks for ``part``, a few of ``excluded`` (``done`` made before them).
    """
    if len(excluded) == 0 or len(kept) == 0:
        return kept
    removed = torch.zeros(kept.image_size, dtype=torch.bool)
    left = kept.masks.any(dim=0)  # kept pixels no cut has removed yet
    todo, done = torch.arange(len(excluded)), 0
    while len(todo := todo[can_cut(excluded.boxes[todo], left)]):
        group, todo = todo[:CUT_GROUP], todo[CUT_GROUP:]
        part = excluded.select(group)
        removed |= (decode(part, done) & inside_boxes(part.boxes, excluded.image_size)).any(dim=0)
        left &= ~removed
        done += len(group)
    return replace(kept, masks=kept.masks & ~removed)
