"""Which of a detector's scored boxes a run keeps, the same for every detector.

The boxes of the kept phrases and those of the excluded phrases each go through non-maximum
suppression on their own: one suppression over both would let a "person" box that outscores the
"bag" box on the same bag remove it, and the bag would be reported as a person. A kept box that is
an excluded box over again (IoU >= ``SAME_OBJECT_IOU``) is that excluded thing under another name:
it is dropped before the kept boxes' suppression, so that it cannot suppress a real kept object
that it overlaps. ``max_detections`` then counts the kept boxes.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, nms

from ..settings import DetectionSettings

# A kept box overlapping an excluded one this much is the same object: dropped.
SAME_OBJECT_IOU = 0.9


def _suppressed(boxes: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor, nms_iou: float | None) -> torch.Tensor:
    """``rows`` best first, without the boxes a better one of them overlaps by more than ``nms_iou``."""
    order = rows[scores[rows].argsort(descending=True, stable=True)]
    if nms_iou is None or nms_iou >= 1.0 or len(order) == 0:
        return order
    return order[nms(boxes[order], scores[order], nms_iou)]


def select_boxes(
    boxes: torch.Tensor, scores: torch.Tensor, excluded: torch.Tensor, settings: DetectionSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept rows, excluded rows) of pixel xyxy ``boxes`` ``[N, 4]``, each best first.

    ``excluded`` is bool ``[N]``: the box belongs to an excluded phrase.
    """
    all_rows = torch.arange(len(scores))
    left_out = _suppressed(boxes, scores, all_rows[excluded], settings.nms_iou)
    kept = all_rows[~excluded]
    if len(kept) and len(left_out):
        same = box_iou(boxes[kept], boxes[left_out]).max(dim=1).values >= SAME_OBJECT_IOU
        kept = kept[~same]
    kept = _suppressed(boxes, scores, kept, settings.nms_iou)
    if settings.max_detections:
        kept = kept[: settings.max_detections]
    return kept, left_out
