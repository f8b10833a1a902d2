"""Pick objects from one run: those of a label, the best k by score, or the k largest, frame by frame.

What users of per-object masks need so that they do not have to parse JSON.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..records import Detections

RANKINGS = ("score", "area")


def _words(text: str) -> set[str]:
    return set(text.lower().replace(".", " ").split())


def label_matches(wanted: str, label: str) -> bool:
    """``wanted`` ("ball", or several as "ball . dog") matches a label holding all the words of one of them."""
    have = _words(label)
    return any(_words(phrase) <= have for phrase in wanted.split(".") if phrase.strip())


def parse_track_ids(text: str) -> set[int] | None:
    """ "3, 7" -> {3, 7}; "" -> None (any track)."""
    if not text.strip():
        return None
    try:
        return {int(part) for part in text.replace(";", ",").split(",") if part.strip()}
    except ValueError:
        raise InputError(f'track_ids must be whole numbers separated by commas, e.g. "1, 4", got {text!r}') from None


def pick_indices(
    found: Detections, areas: torch.Tensor, label: str = "", top_k: int = 0, rank_by: str = "score", track_ids: str = ""
) -> torch.Tensor:
    """Rows of ``found`` to keep, frame by frame in frame order, best first within a frame.

    ``label`` "" keeps every label; ``top_k`` 0 keeps every match; ``rank_by`` is "score" or
    "area" (``areas``: each object's mask pixel count); ``track_ids`` ("1, 4") keeps only those tracks
    of a tracked clip ("" keeps all).
    """
    wanted_ids = parse_track_ids(track_ids)
    if wanted_ids is not None and found.track_id is None:
        raise InputError("track_ids picks tracked objects: connect the detections of 'GroundingDinoSAMTrack (segment anything)'")
    if rank_by not in RANKINGS:
        raise InputError(f"rank_by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    if top_k < 0:
        raise InputError(f"top_k must be >= 0 (0 keeps all), got {top_k}")
    keys = found.scores if rank_by == "score" else areas.float()
    picked = []
    for frame in range(found.num_frames):
        rows = [
            i for i in (found.frame_index == frame).nonzero().flatten().tolist()
            if (not label.strip() or label_matches(label, found.labels[i]))
            and (wanted_ids is None or int(found.track_id[i]) in wanted_ids)
        ]
        rows.sort(key=lambda i: float(keys[i]), reverse=True)
        picked.extend(rows[: top_k or None])
    return torch.tensor(picked, dtype=torch.int64)


def pick_objects(found: Detections, label: str = "", top_k: int = 0, rank_by: str = "score") -> Detections:
    """The picked objects of a segmented ``Detections`` (see ``pick_indices``)."""
    if found.masks is None:
        raise InputError("picking needs segmented detections (with masks)")
    return found.select(pick_indices(found, found.masks.flatten(1).sum(1), label, top_k, rank_by))
