"""Objects a prompt names, followed through a clip with ids that stay theirs.

How a clip is tracked, frame by frame, in one pass:
- the detector runs on frame 0 and every ``redetect_every`` frames after;
- SAM 2's video memory carries every live object's mask from frame to frame (``Propagation``);
- on a detection frame, each detection is segmented in the same memory pass, then joins the live
  track whose mask it overlaps (``identities.match_to_tracks``); a track joined keeps its id and
  memory, and the label that first found it (other labels a detection gives it are listed in
  ``labels_seen``); its score is the latest detection's. Any other detection starts a new track,
  with an id never used before. The frame's memories are encoded only then, so a detection dropped as a
  duplicate never reaches the memory encoder (SAM 3's weighs each object of a prompted frame against
  the others: a duplicate would cut holes in its own track's memory);
- a track whose object is out of sight for more than ``lost_after`` frames ends; until then a
  detection that overlaps its last mask brings it back under the same id: the detection's box is
  its new prompt (its memory of being lost is dropped), as SAM 2 is re-prompted on a lost object;
- a track out of sight for a whole detection interval (``redetect_every`` frames) is parked: its memory
  leaves the pass, so it costs nothing per frame (SAM 2 runs its whole memory attention for every object,
  seen or not), and it waits, by its last mask, for a detection to bring it back as above. What parking
  changes: an object that comes back between detections is found at the next one rather than by memory
  (``park_absent=False`` keeps every track in memory until it ends); the other objects' masks are the same;
- an object first found on frame k > 0 is followed backwards too, over the ``backtrack`` frames
  before k (held, as 8-bit frames, for that purpose): Grounded-SAM-2's reverse tracking;
- objects of the excluded phrases are tracked the same way (ids of their own, never reported),
  and on every frame their whole tracked masks are cut out of the kept objects' masks (an image's
  ``exclusion.cut_out`` cuts only inside the excluded box; between detections a tracked object has
  no box but its mask's extent); an object left with no pixel is not on that frame.

Memory stays flat however long the clip: the memory window of features (see ``propagation``),
``backtrack`` held frames and their image features (read by the backward pass, so no frame is encoded
twice: 16 MiB a frame for SAM 2 at 1024, and its positional encodings once), and each frame's masks at one bit a pixel until the frame is final
(``backtrack`` frames later), when it is handed to the caller and forgotten here. On a CPU, the
pages each frame frees go back to the system after the frame (``trim_freed_heap``), else glibc
keeps them and RSS climbs while what is live stays flat.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..detection_step import autocast_for, find_kept_and_excluded
from ..errors import InputError
from ..prompts import Prompt
from ..records import LABEL_SEPARATOR, Detections
from ..runtime.devices import frees_into_host_heap
from ..runtime.freed_memory import trim_freed_heap
from ..runtime.run_hooks import FrameSteps, RunHooks
from ..sam.edgetam_convert import NAME as EDGETAM
from ..sam.sam2_segmenter import Sam2Segmenter
from ..sam3.segmenter import Sam3Segmenter
from ..settings import DetectionSettings
from ..stages import Detector
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


def check_tracking(segmenter, redetect_every: int, backtrack: int | None) -> Sam2Segmenter:
    """Every choice checked before a model runs: the segmenter can track, the intervals make sense."""
    if isinstance(redetect_every, bool) or not isinstance(redetect_every, int) or redetect_every < 1:
        raise InputError(f"redetect_every must be a whole number >= 1 (1: detect on every frame), got {redetect_every!r}")
    if backtrack is not None and (not isinstance(backtrack, int) or backtrack < 0):
        raise InputError(f"backtrack must be a whole number >= 0 (0: no backward pass), got {backtrack!r}")
    if not isinstance(segmenter, Sam2Segmenter):
        kind = "no SAM model" if segmenter is None else segmenter.name
        raise InputError(
            f"tracking needs SAM 2, 2.1, EdgeTAM or SAM 3 in the SAM socket (their video memory); this pipeline has {kind}: "
            "load a sam2.1_hiera_*.pt file, EdgeTAM's edgetam.pt or SAM 3's sam3.pt"
        )
    if isinstance(segmenter, Sam3Segmenter) and segmenter.video is None:
        raise InputError(
            f"this {segmenter.name} has no tracker (a transformers 'sam3' folder holds the detector only): load Meta's sam3.pt "
            "or the hub's facebook/sam3 folder (model_type sam3_video) to track, or SAM 2 / 2.1 in the SAM socket"
        )
    if segmenter.video is None and segmenter.name == EDGETAM:
        raise InputError(
            "EdgeTAM was loaded from an image-only transformers folder (model_type edgetam), without its video memory "
            "weights: load Meta's release file (edgetam.pt) or the hub's edgetam_video folder to track"
        )
    if segmenter.video is None:
        raise InputError(
            f"{segmenter.name} was loaded from an image-only transformers folder (model_type sam2), without SAM 2's video "
            "memory weights: load Meta's release file (sam2.1_hiera_*.pt) or the hub's sam2_video folder to track"
        )
    return segmenter


def track_frames(
    detector: Detector,
    segmenter,
    precision: str,
    frames,
    prompt: str,
    settings: DetectionSettings | None = None,
    exclude: str | None = None,
    redetect_every: int = 10,
    backtrack: int | None = None,
    lost_after: int | None = None,
    hooks: RunHooks | None = None,
    park_absent: bool = True,
) -> Iterator[Detections]:
    """One-frame ``Detections`` (with ``track_id`` and masks) per frame of ``frames``, in order, as each is final.

    ``precision`` is the effective one ("fp32", "bf16", "fp16") detection runs in. When the run stops (an
    error, a cancel, Ctrl-C), every frame already segmented is yielded first, with the backward pass's masks
    as far as it got, then the error goes on: a caller's loop writes them before it sees the error. A stop
    raised in the caller's own loop is handed in with ``frames_held_after``.
    """
    segmenter = check_tracking(segmenter, redetect_every, backtrack)
    wanted = Prompt.parse(prompt, exclude)  # a bad prompt fails before any model runs
    settings = settings or DetectionSettings()
    hooks = hooks or RunHooks()
    backtrack = redetect_every if backtrack is None else backtrack
    lost_after = max(LOST_AFTER_MIN_FRAMES, LOST_AFTER_INTERVALS * redetect_every) if lost_after is None else lost_after
    clip = open_frames(frames)
    if not isinstance(park_absent, bool):
        raise InputError(f"park_absent must be True or False, got {park_absent!r}")
    park_after = redetect_every if park_absent else None
    tracking = _Tracking(detector, segmenter, precision, wanted, settings, redetect_every, backtrack, lost_after, hooks, clip.count,
                         park_after)
    yield from tracking.run(clip)


def frames_held_after(results: Generator[Detections, None, None], stop: BaseException) -> Iterator[Detections]:
    """The frames a tracking run still held when ``stop`` was raised in its caller's loop (Ctrl-C while a frame
    was written): ``stop`` is handed to the run, which yields what it holds; nothing if the run had ended."""
    if inspect.getgeneratorstate(results) != inspect.GEN_SUSPENDED:
        return
    try:
        found = results.throw(stop)
        while True:
            yield found
            found = next(results)
    except StopIteration:
        return
    except BaseException as again:  # noqa: BLE001 - the stop comes back once the frames are out
        if again is not stop:
            raise


class _Tracking:
    def __init__(
        self, detector, segmenter, precision, prompt, settings, redetect_every, backtrack, lost_after, hooks, count, park_after
    ) -> None:
        self.detector = detector
        self.precision = precision
        self.segmenter = segmenter
        self.prompt = prompt
        self.settings = settings
        self.redetect_every = redetect_every
        self.backtrack = backtrack
        self.lost_after = lost_after
        self.hooks = hooks
        self.count = count
        self.park_after = park_after  # frames out of sight before a track leaves the memory pass (None: never)
        self.parked: set[int] = set()  # memory ids of live tracks out of the pass, waiting for a detection
        self.identities = Identities(lost_after)
        self.excluded = Identities(lost_after)  # the excluded objects' own ids (memory id EXCLUDED_IDS + id)
        self.labels: dict[int, tuple[str, float]] = {}  # every track's first label and latest score, by id
        self.labels_seen: dict[int, list[str]] = {}  # every label a track was detected as, the first first
        self.pending: dict[int, FrameResult] = {}
        self.held: deque[tuple[int, torch.Tensor]] = deque(maxlen=backtrack + 1)
        self.encoded: dict[int, dict] = {}  # the held frames' image features from the forward pass, for the backward one
        self.size: tuple[int, int] | None = None
        self.forward: Propagation | None = None
        self.device_type = next(segmenter.module().parameters()).device.type
        # On a CPU each frame's tensors are freed into glibc's heap, which keeps their pages: handed back after every frame.
        self.trims_heap = frees_into_host_heap(self.device_type)

    def run(self, clip) -> Iterator[Detections]:
        index = -1
        try:
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
        except GeneratorExit:  # the caller stopped reading: nothing can be handed to it
            raise
        except BaseException:
            # stopped (an error, a cancel, Ctrl-C): every frame segmented so far goes out before the error does
            yield from self._final(index)
            raise
        yield from self._final(index)

    def _autocast(self):
        """The memory pass in the run's precision, as detection and an image's segmentation are (bf16: autocast)."""
        return autocast_for(self.precision, self.device_type)

    def _propagation(self, reverse: bool = False) -> Propagation:
        return Propagation(self.segmenter.video, self.size, reverse=reverse, read_frame=self.segmenter.video_frame)

    def _frame(self, index: int, frame: torch.Tensor, steps: FrameSteps) -> None:
        found = excluded = None
        provisional: list[int] = []
        provisional_excluded: list[int] = []
        detecting = index % self.redetect_every == 0
        if detecting:
            with autocast_for(self.precision, self.detector.device.type):
                found, excluded = find_kept_and_excluded(self.detector, frame, self.prompt, self.settings, steps, whole_frame=False)
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
        # the rest of the frame: this pass, and the backward pass a new object may start (half each)
        steps.plan_passes(2 if detecting and index > 0 and self.backtrack else 1)
        with steps.encoder(self.segmenter.module()), self._autocast():  # SAM 3's tracker reads its detector's encoder
            # on a detection frame the memories wait until each detection has joined its track or been dropped
            ids, logits, _ = self.forward.step(index, frame, encode=not detecting)
            self._hold_encoding(index)
            masks = self.forward.full_size(logits)
            by_id = dict(zip(ids, masks, strict=True))
            born: list[tuple[int, torch.Tensor]] = []
            if provisional:
                born += self._join(self.identities, 0, found, provisional, by_id, room)
            if provisional_excluded:
                born += self._join(self.excluded, EXCLUDED_IDS, excluded, provisional_excluded, by_id, room_excluded)
            if detecting:
                self.forward.encode(index)
        if born and index > 0 and self.backtrack:
            self._backwards(index, born, steps)
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
                self._label(track_id, found.labels[row], float(found.scores[row]))
            memory_id = None if track_id is None else offset + track_id
            if memory_id is None or (memory_id in by_id and by_id[memory_id].any()):  # dropped, or a visible track seen again
                self.forward.drop([temp])
                continue
            if memory_id in by_id or memory_id in self.parked:  # a track out of sight, found again: the detection's box
                self.forward.drop([memory_id])  # is its new prompt, under its id
                self.forward.rename(temp, memory_id)
                self.parked.discard(memory_id)
                by_id[memory_id] = mask
                continue
            self.forward.rename(temp, memory_id)
            by_id[memory_id] = mask
            born.append((memory_id, found.boxes[row]))
        return born

    def _label(self, track_id: int, label: str, score: float) -> None:
        """A track keeps the label that found it; its score is the latest detection's; other labels are listed."""
        first = self.labels[track_id][0] if track_id in self.labels else label
        self.labels[track_id] = (first, score)
        seen = self.labels_seen.setdefault(track_id, [])
        if label not in seen:
            seen.append(label)

    def _update(self, index: int, by_id: dict[int, torch.Tensor]) -> None:
        kept = {t: m for t, m in by_id.items() if t in self.labels}
        excluded = {t - EXCLUDED_IDS: m for t, m in by_id.items() if t >= EXCLUDED_IDS}
        ended = [*self.identities.seen(index, kept), *(EXCLUDED_IDS + t for t in self.excluded.seen(index, excluded))]
        self.forward.drop(ended)
        self.parked.difference_update(ended)
        if self.park_after is not None:
            self._park(index)
        cut = [m for m in excluded.values() if m.any()]
        packed = _pack(torch.stack(cut).any(0)) if cut else None
        self.pending[index] = FrameResult({t: _pack(m) for t, m in sorted(kept.items()) if m.any()}, packed)

    def _park(self, index: int) -> None:
        """Tracks out of sight for ``park_after`` frames leave the memory pass (they stay live, by their last mask)."""
        absent = [
            offset + t
            for identities, offset in ((self.identities, 0), (self.excluded, EXCLUDED_IDS))
            for t, last in identities.last_seen.items()
            if index - last >= self.park_after and offset + t not in self.parked
        ]
        self.forward.drop(absent)
        self.parked.update(absent)

    def _hold_encoding(self, index: int) -> None:
        """Keep frame ``index``'s image features while its frame is held, so the backward pass does not encode it again
        (``backtrack`` + 1 frames' features at most; every frame's positional encodings are the same, held once)."""
        if not self.backtrack or self.forward.encoded is None:
            return
        features = dict(self.forward.encoded)
        if self.encoded:
            positions = next(iter(self.encoded.values()))["vision_pos_embeds"]
            if [p.shape for p in positions] == [p.shape for p in features["vision_pos_embeds"]]:
                features["vision_pos_embeds"] = positions
        self.encoded[index] = features
        for old in [i for i in self.encoded if i < index - self.backtrack]:
            del self.encoded[old]

    def _backwards(self, index: int, born: list[tuple[int, torch.Tensor]], steps: FrameSteps) -> None:
        """The new objects followed back over the held frames before ``index`` (a separate memory pass), each
        step a stage of frame ``index``'s ``steps``: the bar moves on through it and a cancel stops it."""
        held = dict(self.held)
        earlier_frames = []
        for earlier in range(index - 1, max(-1, index - self.backtrack - 1), -1):
            if earlier not in held or earlier not in self.pending:
                break
            earlier_frames.append(earlier)
        back = self._propagation(reverse=True)
        back.add_boxes(index, [b for b, _ in born], torch.stack([box for _, box in born]))
        steps.plan_passes(1 + len(earlier_frames))
        with steps.encoder(self.segmenter.module()), self._autocast():
            back.step(index, held[index], features=self.encoded.get(index))
        for left, earlier in enumerate(earlier_frames):
            steps.plan_passes(len(earlier_frames) - left)
            with steps.encoder(self.segmenter.module()), self._autocast():
                ids, logits, _ = back.step(earlier, held[earlier], features=self.encoded.get(earlier))
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
            labels_seen=tuple(LABEL_SEPARATOR.join(self.labels_seen[i]) for i in ids),
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
