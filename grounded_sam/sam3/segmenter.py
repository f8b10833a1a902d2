"""SAM 3 in the SAM socket: with SAM 3 also in the detector socket, the detector's own masks are the result."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..caching import LruCache
from ..errors import InputError
from ..placement import ModelPlacement
from .detector import Sam3Detector


class Sam3Segmenter(ModelPlacement):
    """The mask stage of a SAM 3 that is also the detector: one pass gives boxes, scores and masks."""

    def __init__(self, detector: Sam3Detector) -> None:
        self.detector = detector
        self.model = detector.model
        self.name = detector.name

    def caches(self) -> tuple[LruCache, ...]:
        return self.detector.caches()

    def embed(self, frame: torch.Tensor) -> object:
        raise self._other_boxes()

    def masks_for_boxes(
        self, embedding: object, boxes: torch.Tensor, on_chunk: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        raise self._other_boxes()

    def _other_boxes(self) -> InputError:
        """Another detector's boxes would need SAM 3's box-to-mask head (its tracker), which is not wired in."""
        return InputError(
            f"{self.name} as the mask stage segments SAM 3's own detections only: "
            "choose the same SAM 3 in the Grounding DINO loader, or a SAM / SAM 2 model here"
        )
