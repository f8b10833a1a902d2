"""Text-prompted segmentation: Grounding DINO finds boxes, Segment Anything turns them into masks.

The public names are imported on first use, so ``import grounded_sam.cli`` (and ``grounded-sam
--help``) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "DetectionSettings": ".settings",
    "GroundingDinoDetector": ".dino.detector",
    "load_grounding_dino": ".loaders",
    "CancelledError": ".errors",
    "GroundedSamError": ".errors",
    "InputError": ".errors",
    "ModelFileError": ".errors",
    "ModelNotFoundError": ".errors",
    "GroundedSam": ".pipeline",
    "Detections": ".records",
    "load_sam": ".loaders",
    "SamSegmenter": ".sam.segmenter",
    "RunHooks": ".runtime.run_hooks",
    "resolve_device": ".runtime.devices",
    "bound_kernel_caches": ".runtime.kernel_caches",
    "release_freed_memory": ".runtime.freed_memory",
    "label_dataset": ".labeling.runner",
    "evaluate": ".labeling.evaluation",
}

__all__ = [
    "CancelledError",
    "DetectionSettings",
    "Detections",
    "GroundedSam",
    "GroundedSamError",
    "GroundingDinoDetector",
    "InputError",
    "ModelFileError",
    "ModelNotFoundError",
    "RunHooks",
    "SamSegmenter",
    "bound_kernel_caches",
    "evaluate",
    "label_dataset",
    "load_grounding_dino",
    "load_sam",
    "release_freed_memory",
    "resolve_device",
]

if TYPE_CHECKING:
    from .dino.detector import GroundingDinoDetector
    from .errors import CancelledError, GroundedSamError, InputError, ModelFileError, ModelNotFoundError
    from .labeling.evaluation import evaluate
    from .labeling.runner import label_dataset
    from .loaders import load_grounding_dino, load_sam
    from .pipeline import GroundedSam
    from .records import Detections
    from .runtime.devices import resolve_device
    from .runtime.freed_memory import release_freed_memory
    from .runtime.kernel_caches import bound_kernel_caches
    from .runtime.run_hooks import RunHooks
    from .sam.segmenter import SamSegmenter
    from .settings import DetectionSettings


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'grounded_sam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value
