"""The one record that flows from detection to every output (nodes, CLI, Python)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Detections:
    """Objects found in a batch of same-sized frames.

    Row ``i`` of every field describes one object. ``masks`` is ``None`` until SAM has run,
    so a detector-only result and a segmented one share a type.
    """

    boxes: torch.Tensor  # float32 [N, 4], pixel xyxy in the input frame
    scores: torch.Tensor  # float32 [N], the box confidence (max over prompt tokens)
    labels: tuple[str, ...]  # the prompt phrase behind each box
    frame_index: torch.Tensor  # int64 [N], which input frame the object is in
    image_size: tuple[int, int]  # (H, W) of every frame
    num_frames: int
    masks: torch.Tensor | None = None  # bool [N, H, W]
    # int64 [N]: which phrase of the prompt (0-based, in " . " order) holds the box's best-scoring token
    phrase_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.scores.shape != (n,) or self.frame_index.shape != (n,) or len(self.labels) != n:
            raise ValueError("Detections fields disagree on the number of objects")
        if self.phrase_index is not None and self.phrase_index.shape != (n,):
            raise ValueError("Detections fields disagree on the number of objects")
        if self.masks is not None and tuple(self.masks.shape) != (n, *self.image_size):
            raise ValueError(f"masks shape {tuple(self.masks.shape)} != {(n, *self.image_size)}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, num_frames: int, image_size: tuple[int, int], with_masks: bool = False) -> Detections:
        h, w = image_size
        return cls(
            boxes=torch.zeros((0, 4), dtype=torch.float32),
            scores=torch.zeros((0,), dtype=torch.float32),
            labels=(),
            frame_index=torch.zeros((0,), dtype=torch.int64),
            image_size=(h, w),
            num_frames=num_frames,
            masks=torch.zeros((0, h, w), dtype=torch.bool) if with_masks else None,
            phrase_index=torch.zeros((0,), dtype=torch.int64),
        )

    @classmethod
    def concat(cls, parts: list[Detections], num_frames: int, image_size: tuple[int, int]) -> Detections:
        """Join per-frame results; ``frame_index`` must already be set on each part."""
        if not parts:
            return cls.empty(num_frames, image_size)
        with_masks = all(p.masks is not None for p in parts)
        with_phrases = all(p.phrase_index is not None for p in parts)
        return cls(
            boxes=torch.cat([p.boxes for p in parts]),
            scores=torch.cat([p.scores for p in parts]),
            labels=tuple(label for p in parts for label in p.labels),
            frame_index=torch.cat([p.frame_index for p in parts]),
            image_size=image_size,
            num_frames=num_frames,
            masks=torch.cat([p.masks for p in parts]) if with_masks else None,
            phrase_index=torch.cat([p.phrase_index for p in parts]) if with_phrases else None,
        )

    def select(self, keep: torch.Tensor) -> Detections:
        """Rows picked by a bool mask or an index tensor, in that order."""
        idx = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        return replace(
            self,
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            labels=tuple(self.labels[i] for i in idx.tolist()),
            frame_index=self.frame_index[idx],
            masks=None if self.masks is None else self.masks[idx],
            phrase_index=None if self.phrase_index is None else self.phrase_index[idx],
        )

    def for_frame(self, frame: int) -> Detections:
        return self.select(self.frame_index == frame)

    def with_masks(self, masks: torch.Tensor) -> Detections:
        return replace(self, masks=masks)

    def clipped_to_image(self) -> Detections:
        """Boxes cut to the frame: detectors may place a box edge outside the image."""
        h, w = self.image_size
        limits = torch.tensor([w, h, w, h], dtype=self.boxes.dtype)
        return replace(self, boxes=torch.minimum(self.boxes.clamp(min=0), limits))

    def merged_masks(self) -> torch.Tensor:
        """One bool mask per input frame, in input order; a frame with no object is all False."""
        h, w = self.image_size
        merged = torch.zeros((self.num_frames, h, w), dtype=torch.bool)
        if self.masks is None:
            raise ValueError("these detections have not been segmented yet")
        for i in range(len(self)):
            merged[int(self.frame_index[i])] |= self.masks[i]
        return merged

    def to_json(self) -> list[dict[str, Any]]:
        """Plain data for JSON files and other nodes: no tensors."""
        rows = []
        for i in range(len(self)):
            rows.append(
                {
                    "frame": int(self.frame_index[i]),
                    "label": self.labels[i],
                    "score": round(float(self.scores[i]), 6),
                    "box_xyxy": [round(float(v), 3) for v in self.boxes[i].tolist()],
                    **({"mask_area": int(self.masks[i].sum())} if self.masks is not None else {}),
                }
            )
        return rows


@dataclass(frozen=True)
class PackedMasks:
    """bool ``[N, H, W]`` masks at one bit a pixel (1/32 of ComfyUI's float32 MASK), unpacked on demand.

    What a host keeps when it holds results it may never read: hundreds of full-size object
    masks cost megabytes instead of gigabytes.
    """

    bits: np.ndarray  # uint8 [N, H, ceil(W / 8)]
    width: int

    @classmethod
    def pack(cls, masks: torch.Tensor) -> PackedMasks:
        return cls(np.packbits(masks.numpy().astype(bool, copy=False), axis=-1), int(masks.shape[-1]))

    def __len__(self) -> int:
        return int(self.bits.shape[0])

    def select(self, rows: torch.Tensor) -> PackedMasks:
        return PackedMasks(self.bits[rows.numpy()], self.width)

    def areas(self) -> torch.Tensor:
        """Pixels in each mask, without unpacking them all at once."""
        counts = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
        return torch.from_numpy(counts[self.bits].reshape(len(self), -1).sum(1).astype(np.int64))

    def unpack(self) -> torch.Tensor:
        """The bool ``[N, H, W]`` masks that were packed."""
        return torch.from_numpy(np.unpackbits(self.bits, axis=-1, count=self.width).view(np.bool_))
