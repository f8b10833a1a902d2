"""The detection settings every detector reads: thresholds, overlap suppression and how many objects to keep."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class DetectionSettings:
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    nms_iou: float | None = 0.7  # None: keep overlapping boxes
    max_detections: int | None = None

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise InputError(f"{name} must be between 0 and 1, got {value!r}")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise InputError(f"nms_iou must be in (0, 1] or None, got {self.nms_iou!r}")
        if self.max_detections is not None and self.max_detections < 0:
            raise InputError(f"max_detections must be >= 0 (0 = no limit), got {self.max_detections!r}")
