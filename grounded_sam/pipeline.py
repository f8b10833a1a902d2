"""Text prompt + frames -> detections with masks, frame by frame, never dropping a frame."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .dino.detector import DetectionSettings, GroundingDinoDetector
from .dino.text import caption_from_prompt
from .errors import InputError
from .images import to_uint8_frames
from .records import Detections
from .sam.segmenter import SamSegmenter


@dataclass(frozen=True)
class RunHooks:
    """How a host (ComfyUI, a CLI) watches and stops a run without us importing it."""

    on_progress: Callable[[int, int], None] | None = None  # (frames done, frames total)
    check_cancel: Callable[[], None] | None = None  # raises to stop between steps


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
            if hooks.check_cancel:
                hooks.check_cancel()
            found = self.detect_and_segment(frames[index], prompt, settings, hooks)
            parts.append(replace(found, frame_index=torch.full((len(found),), index, dtype=torch.int64)))
            if hooks.on_progress:
                hooks.on_progress(index + 1, total)
        return Detections.concat(parts, total, size)

    def detect_and_segment(
        self, frame: torch.Tensor, prompt: str, settings: DetectionSettings, hooks: RunHooks | None = None
    ) -> Detections:
        with self._autocast():
            found = self.detector.detect(frame, prompt, settings)
            if len(found) == 0:
                return found.with_masks(torch.zeros((0, *found.image_size), dtype=torch.bool))
            if hooks and hooks.check_cancel:
                hooks.check_cancel()
            embedding = self.segmenter.embed(frame)
            return found.with_masks(self.segmenter.masks_for_boxes(embedding, found.boxes))
