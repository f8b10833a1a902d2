"""Text prompt + frames -> detections with masks, frame by frame, never dropping a frame."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import torch

from .devices import PRECISION_CHOICES, accelerators, choose_precision, resolve_device
from .dino.detector import DetectionSettings, GroundingDinoDetector
from .dino.text import caption_from_prompt
from .errors import InputError
from .exclusion import cut_out, prompt_phrases, split_excluded, with_exclusions
from .images import to_uint8_frames
from .records import Detections
from .sam.segmenter import SamSegmenter
from .sam3.detector import Sam3Detector
from .sam3.segmenter import Sam3Segmenter
from .steps import FrameSteps, RunHooks

__all__ = ["AUTOCAST_DTYPES", "PRECISION_CHOICES", "GroundedSam", "RunHooks"]


AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class GroundedSam:
    """A detector and a segmenter used together.

    ``precision`` "bf16"/"fp16" runs both models under autocast: faster on GPUs, masks slightly
    different from fp32 (the benchmark reports by how much). "fp32" is exact. "auto" (the
    default) is bf16 on GPUs that run it fast and fp32 elsewhere, decided on each run from
    where the models are (see ``devices.choose_precision``).
    """

    def __init__(
        self, detector: GroundingDinoDetector | Sam3Detector, segmenter: SamSegmenter | Sam3Segmenter, precision: str = "auto"
    ) -> None:
        if precision not in PRECISION_CHOICES:  # rejected now, not mid-run
            raise InputError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
        self.detector = detector
        self.segmenter = segmenter
        self.precision = precision

    def to(self, device: str | torch.device = "auto") -> GroundedSam:
        """Move both models, e.g. ``"cuda"``, ``"mps"``, ``"cpu"`` or ``"auto"`` (CUDA, then MPS, then the CPU)."""
        target = resolve_device(device)
        self.detector.to(target)
        self.segmenter.to(target)
        return self

    def one_pass(self) -> bool:
        """True when the detector's masks are the result (SAM 3 as both stages): no second segmentation."""
        return isinstance(self.segmenter, Sam3Segmenter) and self.segmenter.detector is self.detector

    def effective_precision(self) -> str:
        """What ``precision`` means where the detector is now: "fp32", "bf16" or "fp16"."""
        return choose_precision(self.precision, self.detector.device.type, accelerators())

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES[self.effective_precision()]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.detector.device.type, dtype=dtype)

    def segment(
        self,
        image: torch.Tensor | np.ndarray,
        prompt: str,
        settings: DetectionSettings | None = None,
        hooks: RunHooks | None = None,
        exclude: str | None = None,
    ) -> Detections:
        """Objects named by ``prompt`` in each frame of ``image`` (``[B, H, W, C]`` or ``[H, W, C]``).

        ``exclude`` ("bag . shadow") names things to leave out: found in the same pass, then cut
        out of every kept mask (see ``exclusion``).
        """
        settings = settings or DetectionSettings()
        hooks = hooks or RunHooks()
        caption_from_prompt(prompt)  # reject a bad prompt before any model runs
        with_exclusions(prompt, exclude)
        frames = to_uint8_frames(image)
        total = frames.shape[0]
        size = (int(frames.shape[1]), int(frames.shape[2]))
        parts = []
        for index in range(total):
            steps = FrameSteps(hooks, index, total)
            steps.check()
            found = self.detect_and_segment(frames[index], prompt, settings, steps, exclude)
            parts.append(replace(found, frame_index=torch.full((len(found),), index, dtype=torch.int64)))
            steps.finish()
        return Detections.concat(parts, total, size)

    def detect_and_segment(
        self,
        frame: torch.Tensor,
        prompt: str,
        settings: DetectionSettings,
        steps: FrameSteps | None = None,
        exclude: str | None = None,
    ) -> Detections:
        """One uint8 ``[H, W, 3]`` frame; ``steps`` (from ``segment``) reports progress and stops mid-frame."""
        steps = steps or FrameSteps(RunHooks(), 0, 1)
        excluding = bool(prompt_phrases(exclude or ""))
        with self._autocast():
            with steps.detection(self.detector.model):
                if excluding:
                    combined, kept_phrases = with_exclusions(prompt, exclude)
                    found = self.detector.detect(frame, combined, replace(settings, max_detections=None))
                    found, excluded = split_excluded(found, kept_phrases)
                    found = found.select(torch.arange(len(found))[: settings.max_detections or None])
                else:
                    found = self.detector.detect(frame, prompt, settings)
                    excluded = found.select(torch.zeros(0, dtype=torch.int64))
            everything = Detections.concat([found, excluded], 1, found.image_size)
            if len(everything) == 0:
                return found.with_masks(torch.zeros((0, *found.image_size), dtype=torch.bool))
            if self.one_pass():  # SAM 3 in both sockets: its detections carry its masks
                segmented = everything.clipped_to_image()
            else:
                steps.plan_segmentation(len(everything))
                with steps.encoder(self.segmenter.model.vision_encoder):
                    embedding = self.segmenter.embed(frame)
                masks = self.segmenter.masks_for_boxes(embedding, everything.boxes, on_chunk=steps.chunk_decoded)
                # SAM is prompted with the model's boxes, as in the original Grounded-SAM (the masks stay
                # comparable with it); what we report is clipped to the frame.
                segmented = everything.with_masks(masks).clipped_to_image()
        kept = segmented.select(torch.arange(len(found)))
        return cut_out(kept, segmented.select(torch.arange(len(found), len(segmented))))
