"""Leave things out: "the person, not the bag".

The excluded phrases ride along in the same detection pass (appended to the prompt), their
objects are segmented with the others, and then they are cut out of every kept object's mask.
A kept object whose box is essentially an excluded object's box is the excluded thing under
another name, and is dropped.
"""

from __future__ import annotations

from dataclasses import replace

from torchvision.ops import box_iou

from .errors import InputError
from .records import Detections

# A kept box overlapping an excluded one this much is the same object: dropped.
SAME_OBJECT_IOU = 0.9


def prompt_phrases(prompt: str) -> list[str]:
    """The phrases of a ``"dog . red ball"`` prompt, lower-cased and stripped (empty ones dropped)."""
    return [p.strip() for p in prompt.lower().split(".") if p.strip()]


def with_exclusions(prompt: str, exclude: str | None) -> tuple[str, int]:
    """The prompt to detect with (the kept phrases first, then the excluded ones) and the number of kept phrases."""
    kept, excluded = prompt_phrases(prompt), prompt_phrases(exclude or "")
    both = sorted(set(kept) & set(excluded))
    if both:
        raise InputError(f"{', '.join(repr(p) for p in both)} is both in the prompt and in exclude: name it in one of them")
    return " . ".join(kept + excluded), len(kept)


def split_excluded(found: Detections, kept_phrases: int) -> tuple[Detections, Detections]:
    """(objects of the kept phrases, objects of the excluded phrases), by the phrase holding each box's best token."""
    if found.phrase_index is None:
        raise ValueError("exclusion needs the detector's phrase of each box")
    excluded = found.phrase_index >= kept_phrases
    return found.select(~excluded), found.select(excluded)


def cut_out(kept: Detections, excluded: Detections) -> Detections:
    """``kept`` without the excluded objects' pixels, and without objects that are an excluded box over again.

    Both come from one frame and carry masks.
    """
    if len(excluded) == 0 or len(kept) == 0:
        return kept
    same = box_iou(kept.boxes, excluded.boxes).max(dim=1).values >= SAME_OBJECT_IOU
    kept = kept.select(~same)
    removed = excluded.masks.any(dim=0)
    return replace(kept, masks=kept.masks & ~removed)

