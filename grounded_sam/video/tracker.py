"""Objects a prompt names, followed through a clip with ids that stay theirs.

How a clip is tracked, frame by frame, in one pass:
- the detector runs on frame 0 and every ``redetect_every`` frames after;
- SAM 2's video memory carries every live object's mask from frame to frame (``Propagation``);
- on a detection frame, each detection is segmented in the same memory pass, then joins the live
  track whose mask it overlaps (``identities.match_to_tracks``); a track joined keeps its id and
  memory, and takes the detection's label and score. Any other detection starts a new track, with
  an id never used before;
- a track whose object is out of sight for more than ``lost_after`` frames ends; until then a
  detection that overlaps its last mask brings it back under the same id;
- an object first found on frame k > 0 is followed backwards too, over the ``backtrack`` frames
  before k (held, as 8-bit frames, for that purpose): Grounded-SAM-2's reverse tracking;
- objects of the excluded phrases are tracked the same way (ids of their own, never reported),
  and on every frame their whole tracked masks are cut out of the kept objects' masks (an image's
  ``exclusion.cut_out`` cuts only inside the excluded box; between detections a tracked object has
  no box but its mask's extent); an object left with no pixel is not on that frame.

Memory stays flat however long the clip: the memory window of features (see ``propagation``),
``backtrack`` held frames, and each frame's masks at one bit a pixel until the frame is final
(``backtrack`` frames later), when it is handed to the caller and forgotten here. On a CPU, the
pages each frame frees go back to the system after the frame (``trim_freed_heap``), else glibc
keeps them and RSS climbs while what is live stays flat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..freed_memory import trim_freed_heap
from ..prompts import Prompt
from ..records import Detections
from ..sam.sam2_segmenter import Sam2Segmenter
from ..sam3_segmenter import Sam3Segmenter
from ..settings import DetectionSettings
from ..steps import FrameSteps, RunHooks
from .frames import open_frames
from .identities import Identities
from .propagation import Propagation

# Live tracks at most when ``max_detections`` sets no limit: each costs SAM 2 a mask decode and a memory
# encoding on every frame, so a prompt that matches everything (a threshold of 0) must not take hundreds.
DEFAULT_MAX_TRACKS = 50
# Frames a track may go unseen before it ends, in detection intervals (at least this many frames).
LOST_AFTER_INTERVALS = 3
LOST_AFTER_MIN_FRAMES = 30
# Memory ids of excluded objects start here (kept tracks count up from 1, fresh detections are negative).
EXCLUDED_IDS = 1 << 30


@dataclass
class FrameResult:
    """One frame's objects until the frame is final: track id -> packed mask, and the excluded objects'
    pixels (packed), cut out of every mask when the frame is handed out."""

    masks: dict[int, np.ndarray]
    cut: np.ndarray | None = None


def check_tracking(pipeline, redetect_every: int, backtrack: int | None) -> Sam2Segmenter:
    """Every choice checked before a model runs: the segmenter can track, the intervals make sense."""
    segmenter = pipeline.segmenter
    if isinstance(redetect_every, bool) or not isinstance(redetect_every, int) or redetect_every < 1:
        raise InputError(f"redetect_every must be a whole number >= 1 (1: detect on every frame), got {redetect_every!r}")
    if backtrack is not None and (not isinstance(backtrack, int) or backtrack < 0):
        raise InputError(f"backtrack must be a whole number >= 0 (0: no backward pass), got {backtrack!r}")
    if not isinstance(segmenter, Sam2Segmenter):
        kind = "no SAM model" if segmenter is None else segmenter.name
        raise InputError(
            f"tracking needs SAM 2, 2.1 or SAM 3 in the SAM socket (their video memory); this pipeline has {kind}: "
            "load a sam2.1_hiera_*.pt file or SAM 3's sam3.pt"
        )
    if isinstance(segmenter, Sam3Segmenter) and segmenter.video is None:
        raise InputError(
            f"this {segmenter.name} has no tracker (a transformers 'sam3' folder holds the detector only): load Meta's sam3.pt "
            "or the hub's facebook/sam3 folder (model_type sam3_video) to track, or SAM 2 / 2.1 in the SAM socket"
        )
    if segmenter.video is None:
        raise InputError(
            f"{segmenter.name} was loaded from an image-only transformers folder (model_type sam2), without SAM 2's video "
            "memory weights: load Meta's release file (sam2.1_hiera_*.pt) or the hub's sam2_video folder to track"
        )
    return segmenter


def track_frames(
    pipeline,
    frames,
    prompt: str,
    settings: DetectionSettings | None = None,
    exclude: str | None = None,
    redetect_every: int = 10,
    backtrack: int | None = None,
    lost_after: int | None = None,
    hooks: RunHooks | None = None,
) -> Iterator[Detections]:
    """One-frame ``Detections`` (with ``track_id`` and masks) per frame of ``frames``, in order, as each is final."""
    segmenter = check_tracking(pipeline, redetect_every, backtrack)
    wanted = Prompt.parse(prompt, exclude)  # a bad prompt fails before any model runs
    settings = settings or DetectionSettings()
    hooks = hooks or RunHooks()
    backtrack = redetect_every if backtrack is None else backtrack
    lost_after = max(LOST_AFTER_MIN_FRAMES, LOST_AFTER_INTERVALS * redetect_every) if lost_after is None else lost_after
    clip = open_frames(frames)
    yield from _Tracking(pipeline, segmenter, wanted, settings, redetect_every, backtrack, lost_after, hooks, clip.count).run(clip)


class _Tracking:
    def __init__(self, pipeline, segmenter, prompt, settings, redetect_every, backtrack, lost_after, hooks, count) -> None:
        self.pipeline = pipeline
        self.segmenter = segmenter
        self.prompt = prompt
        self.settings = settings
        self.redetect_every = redetect_every
        self.backtrack = backtrack
        self.lost_after = lost_after
        self.hooks = hooks
        self.count = count
        self.identities = Identities(lost_after)
        self.excluded = Identities(lost_after)  # the excluded objects' own ids (memory id EXCLUDED_IDS + id)
        self.labels: dict[int, tuple[str, float]] = {}  # every track's label and latest score, by id
        self.pending: dict[int, FrameResult] = {}
        self.held: deque[tuple[int, torch.Tensor]] = deque(maxlen=backtrack + 1)
        self.size: tuple[int, int] | None = None
        self.forward: Propagation | None = None
        # On a CPU each frame's tensors are freed into glibc's heap, which keeps their pages: handed back after every frame.
        self.trims_heap = next(segmenter.module().parameters()).device.type == "cpu"

    def run(self, clip) -> Iterator[Detections]:
        index = -1
        for index, frame in enumerate(clip):
            if self.size is None:
                self.size = (int(frame.shape[0]), int(frame.shape[1]))
                self.forward = self._propagation()
            steps = FrameSteps(self.hooks, index, max(self.count or 0, index + 1))
            steps.check()
            if self.backtrack:
                self.held.append((index, frame))
            self._frame(index, frame, steps)
            if self.trims_heap:
                trim_freed_heap()
            steps.finish()
            yield from self._final(index - self.backtrack)
        yield from self._final(index)

    def _propagation(self, reverse: bool = False) -> Propagation:
        return Propagation(self.segmenter.video, self.size, reverse=reverse, read_frame=self.segmenter.video_frame)

    def _frame(self, index: int, frame: torch.Tensor, steps: FrameSteps) -> None:
        found = excluded = None
        provisional: list[int] = []
        provisional_excluded: list[int] = []
        if index % self.redetect_every == 0:
            found, excluded = self.pipeline.find_kept_and_excluded(frame, self.prompt, self.settings)
            limit = self.settings.max_detections or DEFAULT_MAX_TRACKS
            room = max(0, limit - len(self.identities.live))
            room_excluded = max(0, limit - len(self.excluded.live))
            found = found.first(limit)  # the best-scoring ones: a detection past them could not be kept or matched
            excluded = excluded.first(limit)
            provisional = [-(i + 1) for i in range(len(found))]
            provisional_excluded = [-(len(found) + i + 1) for i in range(len(excluded))]
            for group, boxes in ((provisional, found.boxes), (provisional_excluded, excluded.boxes)):
                if group:
                    self.forward.add_boxes(index, group, boxes)
        steps.plan_segmentation(0)
        with steps.encoder(self.segmenter.module()):  # SAM 3's tracker reads its detector's encoder: both watched
            ids, logits, _ = self.forward.step(index, frame)
        masks = self.forward.full_size(logits)
        by_id = dict(zip(ids, masks, strict=True))
        born: list[tuple[int, torch.Tensor]] = []
        if provisional:
            born += self._join(self.identities, 0, found, provisional, by_id, room)
        if provisional_excluded:
            born += self._join(self.excluded, EXCLUDED_IDS, excluded, provisional_excluded, by_id, room_excluded)
        if born and index > 0 and self.backtrack:
            self._backwards(index, born)
        self._update(index, by_id)

    def _join(
        self, identities: Identities, offset: int, found: Detections, provisional: list[int], by_id: dict, room: int
    ) -> list[tuple[int, torch.Tensor]]:
        """Each fresh detection joins a live track of its group (kept: ``offset`` 0; excluded: ``EXCLUDED_IDS``, no
        label) or starts one; returns the new tracks (memory id, box). A track joined keeps its memory."""
        current = {t: by_id[offset + t] for t in identities.live if offset + t in by_id}
        ids = identities.assign(torch.stack([by_id[p] for p in provisional]), current, room)
        born: list[tuple[int, torch.Tensor]] = []
        for row, (temp, track_id) in enumerate(zip(provisional, ids, strict=True)):
            mask = by_id.pop(temp)
            if track_id is not None and offset == 0:
                self.labels[track_id] = (found.labels[row], float(found.scores[row]))
            if track_id is None or offset + track_id in by_id:  # dropped, or a live track seen again
                self.forward.drop([temp])
                continue
            self.forward.rename(temp, offset + track_id)
            by_id[offset + track_id] = mask
            born.append((offset + track_id, found.boxes[row]))
        return born

    def _update(self, index: int, by_id: dict[int, torch.Tensor]) -> None:
        kept = {t: m for t, m in by_id.items() if t in self.labels}
        excluded = {t - EXCLUDED_IDS: m for t, m in by_id.items() if t >= EXCLUDED_IDS}
        self.forward.drop(self.identities.seen(index, kept))
        self.forward.drop([EXCLUDED_IDS + t for t in self.excluded.seen(index, excluded)])
        cut = [m for m in excluded.values() if m.any()]
        packed = _pack(torch.stack(cut).any(0)) if cut else None
        self.pending[index] = FrameResult({t: _pack(m) for t, m in sorted(kept.items()) if m.any()}, packed)

    def _backwards(self, index: int, born: list[tuple[int, torch.Tensor]]) -> None:
        """The new objects followed back over the held frames before ``index`` (a separate memory pass)."""
        held = dict(self.held)
        back = self._propagation(reverse=True)
        back.add_boxes(index, [b for b, _ in born], torch.stack([box for _, box in born]))
        back.step(index, held[index])
        for earlier in range(index - 1, max(-1, index - self.backtrack - 1), -1):
            if earlier not in held or earlier not in self.pending:
                break
            steps = FrameSteps(self.hooks, index, max(self.count or 0, index + 1))
            steps.plan_segmentation(0)
            with steps.encoder(self.segmenter.module()):
                ids, logits, _ = back.step(earlier, held[earlier])
            result = self.pending[earlier]
            for track_id, mask in zip(ids, back.full_size(logits), strict=True):
                if not mask.any():
                    continue
                if track_id >= EXCLUDED_IDS:
                    result.cut = _pack(mask) if result.cut is None else result.cut | _pack(mask)
                else:
                    result.masks[track_id] = _pack(mask)

    def _final(self, upto: int) -> Iterator[Detections]:
        for index in sorted(i for i in self.pending if i <= upto):
            yield self._detections(self.pending.pop(index))

    def _detections(self, result: FrameResult) -> Detections:
        ids = sorted(result.masks)
        masks = torch.stack([_unpack(result.masks[i], self.size) for i in ids]) if ids else None
        if masks is not None and result.cut is not None:
            masks &= ~_unpack(result.cut, self.size)
            left = masks.flatten(1).any(1)
            ids, masks = [i for i, k in zip(ids, left.tolist(), strict=True) if k], masks[left]
        if not ids:
            return Detections.empty(1, self.size, with_masks=True)
        return Detections(
            boxes=_mask_boxes(masks),
            scores=torch.tensor([self.labels[i][1] for i in ids], dtype=torch.float32),
            labels=tuple(self.labels[i][0] for i in ids),
            frame_index=torch.zeros(len(ids), dtype=torch.int64),
            image_size=self.size,
            num_frames=1,
            masks=masks,
            track_id=torch.tensor(ids, dtype=torch.int64),
        )


def _pack(mask: torch.Tensor) -> np.ndarray:
    return np.packbits(mask.numpy(), axis=-1)


def _unpack(bits: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(bits, axis=-1, count=size[1]).view(np.bool_))


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Pixel xyxy of each non-empty mask's extent (right and bottom edges exclusive, as box coordinates)."""
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x0, y0, x1, y1], 1).float()
