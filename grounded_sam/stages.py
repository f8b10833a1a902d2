"""The two stages a pipeline joins, as explicit protocols: what the pipeline and the hosts may call.

A detector turns a frame and a prompt into boxes (Grounding DINO, MM-Grounding-DINO, SAM 3); a
segmenter turns a frame's boxes into masks (SAM, HQ-SAM, MobileSAM, SAM 2, SAM 3's box head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from .clicks import Clicks
from .prompts import Prompt
from .records import Detections
from .settings import DetectionSettings


@runtime_checkable
class Stage(Protocol):
    """One loaded model: where it runs, its results cache, how a host moves it."""

    name: str
    model: torch.nn.Module

    @property
    def device(self) -> torch.device: ...

    def module(self) -> torch.nn.Module: ...

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Any: ...

    def clear_caches(self) -> None: ...


@runtime_checkable
class Detector(Stage, Protocol):
    def detect(self, frame: torch.Tensor, prompt: str | Prompt, settings: DetectionSettings) -> Detections:
        """The objects ``prompt`` names in one uint8 ``[H, W, 3]`` frame: kept phrases' first, then excluded ones'."""
        ...


@runtime_checkable
class Segmenter(Stage, Protocol):
    def encoder_module(self) -> torch.nn.Module:
        """The image encoder, whose layers a host's progress bar follows."""
        ...

    def embed(self, frame: torch.Tensor) -> Any:
        """What the encoder makes of one uint8 ``[H, W, 3]`` frame, reusable for any boxes."""
        ...

    def masks_for_boxes(
        self, embedding: Any, boxes: torch.Tensor, on_chunk: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """bool ``[N, H, W]`` masks for pixel xyxy ``boxes`` ``[N, 4]``."""
        ...

    def masks_for_clicks(
        self, embedding: Any, clicks: list[Clicks], boxes: torch.Tensor | None = None, on_chunk: Callable[[int, int], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """bool ``[N, H, W]`` masks and predicted IoU ``[N]`` for objects given by clicks (and boxes)."""
        ...
