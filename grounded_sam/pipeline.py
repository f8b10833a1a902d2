"""Text prompt + frames -> detections with masks, frame by frame, never dropping a frame."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from .click_refinement import with_clicks
from .clicks import Clicks
from .detection_step import AUTOCAST_DTYPES, autocast_for, find_kept_and_excluded
from .errors import InputError
from .media.images import to_uint8_frames
from .prompts import Prompt
from .records import Detections
from .runtime.devices import PRECISION_CHOICES, accelerators, choose_precision, frees_into_host_heap, resolve_device
from .runtime.freed_memory import trim_freed_heap
from .runtime.run_hooks import FrameSteps, RunHooks
from .sam3.segmenter import Sam3Segmenter
from .selection.exclusion import can_cut, cut_decoding_as_needed, cut_out, split_excluded
from .settings import DetectionSettings
from .stages import Detector, Segmenter

__all__ = ["AUTOCAST_DTYPES", "PRECISION_CHOICES", "GroundedSam", "RunHooks"]


class GroundedSam:
    """A detector and a segmenter used together (or a detector alone, for boxes: ``detect``).

    ``precision`` "bf16"/"fp16" runs both models under autocast: faster on GPUs, masks slightly
    different from fp32 (the benchmark reports by how much). "fp32" is exact. "auto" (the
    default) is bf16 on GPUs that run it fast and fp32 elsewhere, decided on each run from
    where the models are (see ``devices.choose_precision``).
    """

    def __init__(self, detector: Detector, segmenter: Segmenter | None, precision: str = "auto") -> None:
        if precision not in PRECISION_CHOICES:  # rejected now, not mid-run
            raise InputError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
        if not isinstance(detector, Detector):
            raise InputError(f"the detector is a {type(detector).__name__}: load one with load_grounding_dino")
        if segmenter is not None and not isinstance(segmenter, Segmenter):
            raise InputError(f"the segmenter is a {type(segmenter).__name__}: load one with load_sam")
        self.detector = detector
        self.segmenter = segmenter
        self.precision = precision

    def to(self, device: str | torch.device = "auto") -> GroundedSam:
        """Move both models, e.g. ``"cuda"``, ``"mps"``, ``"cpu"`` or ``"auto"`` (CUDA, then MPS, then the CPU)."""
        target = resolve_device(device)
        self.detector.to(target)
        if self.segmenter is not None:
            self.segmenter.to(target)
        return self

    def frees_into_host_heap(self) -> bool:
        """True when a model runs on the CPU, whose freed tensors stay in glibc's heap: a frame's are handed back after it."""
        stages = (self.detector, self.segmenter) if self.segmenter is not None else (self.detector,)
        return any(frees_into_host_heap(stage.device.type) for stage in stages)

    def one_pass(self) -> bool:
        """True when the detector's masks are the result (SAM 3 as both stages): no second segmentation."""
        return isinstance(self.segmenter, Sam3Segmenter) and self.segmenter.detector is self.detector

    def effective_precision(self) -> str:
        """What ``precision`` means where the detector is now: "fp32", "bf16" or "fp16"."""
        return choose_precision(self.precision, self.detector.device.type, accelerators())

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.effective_precision(), self.detector.device.type)

    def segment(
        self,
        image: torch.Tensor | np.ndarray,
        prompt: str,
        settings: DetectionSettings | None = None,
        hooks: RunHooks | None = None,
        exclude: str | None = None,
        clicks: Clicks | None = None,
    ) -> Detections:
        """Objects named by ``prompt`` in each frame of ``image`` (``[B, H, W, C]`` or ``[H, W, C]``).

        ``exclude`` ("bag . shadow") names things to leave out: found in the same pass, then cut
        out of every kept mask (see ``exclusion``). ``clicks`` (the same on every frame) fix what
        was found: see ``click_prompts``.
        """
        if self.segmenter is None and not self.one_pass():
            raise InputError("this pipeline has no segmenter: give it a SAM model (load_sam) for masks, or call detect() for boxes")

        def one_frame(frame: torch.Tensor, wanted: Prompt, settings: DetectionSettings, steps: FrameSteps) -> Detections:
            return self.detect_and_segment(frame, wanted, settings, steps, clicks=clicks)

        if clicks is not None and len(clicks) and hasattr(image, "shape") and len(image.shape) in (3, 4):
            clicks.check_inside(tuple(image.shape[-3:-1]))  # a bad click fails before any model runs
        return self._each_frame(image, prompt, settings, hooks, exclude, one_frame)

    def track(
        self,
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
        """The objects ``prompt`` names, followed through a clip: one one-frame ``Detections`` per frame, in order,
        each with ``track_id`` (the same object, the same id, on every frame) and masks.

        ``frames``: an IMAGE batch ``[B, H, W, C]``, an array, a video file, a folder of images or any
        iterable of frames; it is read a frame at a time. Needs SAM 2 / 2.1 in the SAM socket. How ids
        are kept, and what ``redetect_every``, ``backtrack``, ``lost_after`` and ``park_absent`` mean: ``video.tracker``.
        A frame is yielded once nothing can change it (``backtrack`` frames later), so memory stays flat.
        """
        from .video.tracker import track_frames

        return track_frames(self.detector, self.segmenter, self.effective_precision(), frames, prompt, settings, exclude,
                            redetect_every, backtrack, lost_after, hooks, park_absent)

    def detect(
        self,
        image: torch.Tensor | np.ndarray,
        prompt: str,
        settings: DetectionSettings | None = None,
        hooks: RunHooks | None = None,
        exclude: str | None = None,
    ) -> Detections:
        """The boxes ``prompt`` names in each frame, without masks: detection alone (a box detector).

        Objects are the ones ``segment`` would give, with the same boxes, scores and labels; an
        object that is an excluded one's box over again is left out, and nothing is cut.
        """
        return self._each_frame(image, prompt, settings, hooks, exclude, self.find_boxes)

    def _each_frame(
        self,
        image: torch.Tensor | np.ndarray,
        prompt: str,
        settings: DetectionSettings | None,
        hooks: RunHooks | None,
        exclude: str | None,
        one_frame: Callable[[torch.Tensor, Prompt, DetectionSettings, FrameSteps], Detections],
    ) -> Detections:
        settings = settings or DetectionSettings()
        hooks = hooks or RunHooks()
        wanted = Prompt.parse(prompt, exclude)  # a bad prompt fails before any model runs
        frames = to_uint8_frames(image)
        total = frames.shape[0]
        size = (int(frames.shape[1]), int(frames.shape[2]))
        parts = []
        trims_heap = self.frees_into_host_heap()
        for index in range(total):
            steps = FrameSteps(hooks, index, total)
            steps.check()
            found = one_frame(frames[index], wanted, settings, steps)
            parts.append(replace(found, frame_index=torch.full((len(found),), index, dtype=torch.int64)))
            if trims_heap:
                trim_freed_heap()
            steps.finish()
        return Detections.concat(parts, total, size)

    def find_boxes(self, frame: torch.Tensor, prompt: str | Prompt, settings: DetectionSettings, steps: FrameSteps | None = None) -> Detections:
        """One uint8 ``[H, W, 3]`` frame's objects of the kept phrases, boxes clipped to the frame, no masks."""
        return self.find_kept_and_excluded(frame, prompt, settings, steps)[0]

    def find_kept_and_excluded(
        self, frame: torch.Tensor, prompt: str | Prompt, settings: DetectionSettings, steps: FrameSteps | None = None
    ) -> tuple[Detections, Detections]:
        """One frame's (kept, excluded) objects, as ``find_boxes`` gives the kept ones: a tracker follows both."""
        with self._autocast():
            return find_kept_and_excluded(self.detector, frame, Prompt.parse(prompt), settings, steps)

    def detect_and_segment(
        self,
        frame: torch.Tensor,
        prompt: str | Prompt,
        settings: DetectionSettings,
        steps: FrameSteps | None = None,
        exclude: str | None = None,
        clicks: Clicks | None = None,
    ) -> Detections:
        """One uint8 ``[H, W, 3]`` frame; ``steps`` (from ``segment``) reports progress and stops mid-frame.

        Only masks that can change the result are made: none when nothing is kept (and nothing
        clicked), and an excluded object's only while its box holds a kept pixel that no other
        excluded object's cut has removed (``exclusion.cut_decoding_as_needed``).
        """
        steps = steps or FrameSteps(RunHooks(), 0, 1)
        prompt = Prompt.parse(prompt, exclude)
        clicked = clicks is not None and len(clicks) > 0
        with self._autocast():
            with steps.detection(self.detector.model):
                found = self.detector.detect(frame, prompt, settings)
            kept, excluded = split_excluded(found, prompt)
            if len(kept) == 0 and not clicked:
                return kept.with_masks(torch.zeros((0, *kept.image_size), dtype=torch.bool))
            if self.one_pass():  # SAM 3 in both sockets: its detections carry its masks
                if clicked:  # its tracker head segments the clicked objects again
                    kept = with_clicks(self.segmenter, self.segmenter.embed(frame), kept, clicks)
                return cut_out(kept.clipped_to_image(), excluded.clipped_to_image())
            steps.plan_segmentation(len(kept) + len(excluded))
            with steps.encoder(self.segmenter.encoder_module()):
                embedding = self.segmenter.embed(frame)
            # SAM is prompted with the model's boxes, as in the original Grounded-SAM (the masks stay
            # comparable with it); what we report is clipped to the frame.
            planned = len(kept) + len(excluded)
            masks = self.segmenter.masks_for_boxes(embedding, kept.boxes, on_chunk=lambda done, _: steps.chunk_decoded(done, planned))
            kept = kept.with_masks(masks)
            if clicked:
                kept = with_clicks(self.segmenter, embedding, kept, clicks)
            kept = kept.clipped_to_image()
            # at most this many masks: one whose cut earlier cuts have made is skipped (box regions are cut to the frame)
            decoded, planned = len(kept), len(kept) + int(can_cut(excluded.boxes, kept.masks.any(dim=0)).sum())

            def decode(part: Detections, done: int) -> torch.Tensor:
                return self.segmenter.masks_for_boxes(embedding, part.boxes, on_chunk=lambda d, _: steps.chunk_decoded(decoded + done + d, planned))

            return cut_decoding_as_needed(kept, excluded, decode)
