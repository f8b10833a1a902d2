"""Text prompt + frames -> detections with masks, frame by frame, never dropping a frame."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import torch

from .dino.detector import DetectionSettings, GroundingDinoDetector
from .dino.text import caption_from_prompt
from .errors import InputError
from .images import to_uint8_frames
from .records import Detections
from .sam.segmenter import SamSegmenter
from .steps import FrameSteps, RunHooks

__all__ = ["PRECISIONS", "GroundedSam", "RunHooks"]


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class GroundedSam:
    """A detector and a segmenter used together.

    ``precision`` "bf16"/"fp16" runs both models under autocast: faster, masks slightly
    different from fp32 (the benchmark reports by how much). "fp32" is exact.
    """

    def __init__(self, detector: GroundingDinoDetector, segmenter: SamSegmenter, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.detector = detector
        self.segmenter = segmenter
        self.precision = precision

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.detector.device.type, dtype=dtype)

    def segment(
        self,
        image: torch.Tensor | np.ndarray,
        prompt: str,
        settings: DetectionSettings | None = None,
        hooks: RunHooks | None = None,
    ) -> Detections:
        """Objects named by ``prompt`` in each frame of ``image`` (``[B, H, W, C]`` or ``[H, W, C]``)."""
        settings = settings or DetectionSettings()
        hooks = hooks or RunHooks()
        caption_from_prompt(prompt)  # reject a bad prompt before any model runs
        frames = to_uint8_frames(image)
        total = frames.shape[0]
        size = (int(frames.shape[1]), int(frames.shape[2]))
        parts = []
        for index in range(total):
            steps = FrameSteps(hooks, index, total)
            steps.check()
            found = self.detect_and_segment(frames[index], prompt, settings, steps)
            parts.append(replace(found, frame_index=torch.full((len(found),), index, dtype=torch.int64)))
            steps.finish()
        return Detections.concat(parts, total, size)

    def detect_and_segment(
        self, frame: torch.Tensor, prompt: str, settings: DetectionSettings, steps: FrameSteps | None = None
    ) -> Detections:
        """One uint8 ``[H, W, 3]`` frame; ``steps`` (from ``segment``) reports progress and stops mid-frame."""
        steps = steps or FrameSteps(RunHooks(), 0, 1)
        with self._autocast():
            with steps.detection(self.detector.model):
                found = self.detector.detect(frame, prompt, settings)
            if len(found) == 0:
                return found.with_masks(torch.zeros((0, *found.image_size), dtype=torch.bool))
            steps.plan_segmentation(len(found))
            with steps.encoder(self.segmenter.model.vision_encoder):
                embedding = self.segmenter.embed(frame)
            return found.with_masks(self.segmenter.masks_for_boxes(embedding, found.boxes, on_chunk=steps.chunk_decoded))
