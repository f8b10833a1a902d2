"""Which track a new detection belongs to: the one whose mask it overlaps most, above ``SAME_TRACK_IOU``.

A pure choice on masks, so it is tested on masks drawn by hand (objects that enter, leave,
cross, hide and come back). Pairs are taken greedily, highest IoU first: each detection joins
at most one track and each track takes at most one detection, so one detection over two
tracks joins the one it overlaps more and the other track goes on alone.
"""

from __future__ import annotations

import numpy as np
import torch

# A detection whose mask overlaps a live track's mask at least this much (intersection over union)
# is that track's object again. Grounded-SAM-2's demo uses 0.8 with re-prompted masks; our tracks keep
# their own propagated masks, which a fresh detection's mask matches less tightly, hence lower.
SAME_TRACK_IOU = 0.5


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` IoU between bool masks ``a`` ``[A, H, W]`` and ``b`` ``[B, H, W]`` (0 where both are empty)."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros((len(a), len(b)))
    fa = a.reshape(len(a), -1).float()
    fb = b.reshape(len(b), -1).float()
    inter = fa @ fb.T
    union = fa.sum(1, keepdim=True) + fb.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def match_to_tracks(detections: torch.Tensor, tracks: torch.Tensor, threshold: float = SAME_TRACK_IOU) -> list[int | None]:
    """For each detection mask, the row of the track mask it continues, or None for a new object."""
    iou = mask_iou(detections, tracks)
    matched: list[int | None] = [None] * len(detections)
    while iou.numel() and float(iou.max()) >= threshold:
        flat = int(iou.argmax())
        d, t = divmod(flat, iou.shape[1])
        matched[d] = t
        iou[d, :] = -1.0
        iou[:, t] = -1.0
    return matched


class Identities:
    """The live tracks' ids and last masks, and the ids a frame's detections get (pure bookkeeping, no model).

    - ``assign``: each detection continues the live track it overlaps (its mask on this frame, or its
      last mask while it is out of sight), or gets the next id; an id is never used twice.
    - ``seen``: a frame's masks per id; a track unseen for more than ``lost_after`` frames ends.
    """

    def __init__(self, lost_after: int, threshold: float = SAME_TRACK_IOU) -> None:
        self.lost_after = lost_after
        self.threshold = threshold
        self.last_seen: dict[int, int] = {}
        # each live track's last non-empty mask, at one bit a pixel (read on detection frames only)
        self._last_bits: dict[int, tuple[np.ndarray, int]] = {}
        self.next_id = 1

    def last_mask(self, track_id: int) -> torch.Tensor:
        """bool ``[H, W]``: the track's last mask that was not empty (its first mask if none was)."""
        bits, width = self._last_bits[track_id]
        return torch.from_numpy(np.unpackbits(bits, axis=-1, count=width).view(np.bool_))

    def _keep_last(self, track_id: int, mask: torch.Tensor) -> None:
        self._last_bits[track_id] = (np.packbits(mask.cpu().numpy(), axis=-1), int(mask.shape[-1]))

    @property
    def live(self) -> list[int]:
        return list(self.last_seen)

    def assign(self, detections: torch.Tensor, current: dict[int, torch.Tensor], room: int | None = None) -> list[int | None]:
        """Ids for bool ``[D, H, W]`` detection masks given the live tracks' ``current`` masks on this frame.

        A new id only while ``room`` (new tracks allowed) lasts, and only for a non-empty mask; None: dropped.
        """
        live = self.live
        reference = [current[t] if t in current and current[t].any() else self.last_mask(t) for t in live]
        stacked = torch.stack(reference) if reference else detections.new_zeros((0, *detections.shape[1:]))
        matched = match_to_tracks(detections, stacked, self.threshold)
        ids: list[int | None] = []
        for mask, row in zip(detections, matched, strict=True):
            if row is not None:
                ids.append(live[row])
            elif (room is None or room > 0) and mask.any():
                room = None if room is None else room - 1
                ids.append(self.next_id)
                self.next_id += 1
            else:
                ids.append(None)
        return ids

    def seen(self, index: int, masks: dict[int, torch.Tensor]) -> list[int]:
        """Record frame ``index``'s masks (new ids start here); returns the ids that end on this frame."""
        for track_id, mask in masks.items():
            if mask.any() or track_id not in self.last_seen:
                self.last_seen[track_id] = index
                self._keep_last(track_id, mask)
        ended = [t for t, last in self.last_seen.items() if index - last > self.lost_after]
        for track_id in ended:
            del self.last_seen[track_id], self._last_bits[track_id]
        return ended
