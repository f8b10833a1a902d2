"""One frame's detection, split into the objects kept and the ones excluded: the step images and clips share.

The image pipeline and the tracker both run it, each with its own progress steps and precision, so
neither calls the other back (the tracker once called the pipeline that had called it).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch

from .prompts import Prompt
from .records import Detections
from .runtime.run_hooks import FrameSteps, RunHooks
from .selection.exclusion import split_excluded
from .settings import DetectionSettings
from .stages import Detector

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """Autocast for an effective precision ("fp32", "bf16", "fp16") on a device type; fp32 runs as it is."""
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def find_kept_and_excluded(
    detector: Detector,
    frame: torch.Tensor,
    prompt: Prompt,
    settings: DetectionSettings,
    steps: FrameSteps | None = None,
    whole_frame: bool = True,
) -> tuple[Detections, Detections]:
    """One uint8 ``[H, W, 3]`` frame's (kept, excluded) objects, boxes clipped to the frame, no masks.

    Detection is one stage of ``steps``: its layers report progress and stop on a cancel. It covers the
    whole frame unless something is segmented after (``whole_frame`` False). Run it under ``autocast_for``.
    """
    steps = steps or FrameSteps(RunHooks(), 0, 1)
    with steps.detection(detector.model, whole_frame=whole_frame):
        found = detector.detect(frame, prompt, settings)
    kept, excluded = split_excluded(found, prompt)
    return replace(kept, masks=None).clipped_to_image(), replace(excluded, masks=None).clipped_to_image()
