"""Pick objects from one run: those of a label, the best k by score, or the k largest, frame by frame.

What users of per-object masks need so that they do not have to parse JSON.
"""

from __future__ import annotations

import torch

from .errors import InputError
from .records import Detections

RANKINGS = ("score", "area")


def _words(text: str) -> set[str]:
    return set(text.lower().replace(".", " ").split())


def label_matches(wanted: str, label: str) -> bool:
    """``wanted`` ("ball", or several as "ball . dog") matches a label holding all the words of one of them."""
    have = _words(label)
    return any(_words(phrase) <= have for phrase in wanted.split(".") if phrase.strip())


def pick_indices(found: Detections, areas: torch.Tensor, label: str = "", top_k: int = 0, rank_by: str = "score") -> torch.Tensor:
    """Rows of ``found`` to keep, frame by frame in frame order, best first within a frame.

    ``label`` "" keeps every label; ``top_k`` 0 keeps every match; ``rank_by`` is "score" or
    "area" (``areas``: each object's mask pixel count).
    """
    if rank_by not in RANKINGS:
        raise InputError(f"rank_by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    if top_k < 0:
        raise InputError(f"top_k must be >= 0 (0 keeps all), got {top_k}")
    keys = found.scores if rank_by == "score" else areas.float()
    picked = []
    for frame in range(found.num_frames):
        rows = [i for i in (found.frame_index == frame).nonzero().flatten().tolist() if not label.strip() or label_matches(label, found.labels[i])]
        rows.sort(key=lambda i: float(keys[i]), reverse=True)
        picked.extend(rows[: top_k or None])
    return torch.tensor(picked, dtype=torch.int64)


def pick_objects(found: Detections, label: str = "", top_k: int = 0, rank_by: str = "score") -> Detections:
    """The picked objects of a segmented ``Detections`` (see ``pick_indices``)."""
    if found.masks is None:
        raise InputError("picking needs segmented detections (with masks)")
    return found.select(pick_indices(found, found.masks.flatten(1).sum(1), label, top_k, rank_by))
