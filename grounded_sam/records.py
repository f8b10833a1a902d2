"""The one record that flows from detection to every output (nodes, CLI, Python)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

# Joins the labels of one object in ``labels_seen``, as phrases are joined in a prompt ("person . rider").
LABEL_SEPARATOR = " . "


@dataclass(frozen=True)
class PerObject:
    """How one per-object field of ``Detections`` is built empty and joined.

    Every field marked with one is selected, joined and emptied by the same code, so a new field
    (a track id, say) is declared once and can never be dropped by a method that forgot it.
    """

    dtype: torch.dtype | None  # None: a tuple of str
    shape: str = ""  # the shape after N: "" for [N], "4" for [N, 4], "HW" for [N, H, W]
    # For an optional field: the value a part without it gets when joined with parts that have it.
    # None: such parts cannot be joined (``concat`` refuses rather than dropping the field).
    fill: int | None = None
    required: bool = False

    def trailing(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        return {"": (), "4": (4,), "HW": tuple(image_size)}[self.shape]

    def filled(self, rows: int, image_size: tuple[int, int]) -> torch.Tensor | tuple:
        if self.dtype is None:
            return ("",) * rows if self.fill is not None else ()
        value = 0 if self.fill is None else self.fill
        return torch.full((rows, *self.trailing(image_size)), value, dtype=self.dtype)


def _per_object(dtype: torch.dtype | None, shape: str = "", fill: int | None = None, required: bool = False) -> Any:
    spec = PerObject(dtype, shape, fill, required)
    return field(metadata={"per_object": spec}) if required else field(default=None, metadata={"per_object": spec})


@dataclass(frozen=True)
class Detections:
    """Objects found in a batch of same-sized frames.

    Row ``i`` of every per-object field describes one object. ``masks`` is ``None`` until SAM has
    run, so a detector-only result and a segmented one share a type.
    """

    boxes: torch.Tensor = _per_object(torch.float32, "4", required=True)  # [N, 4], pixel xyxy in the input frame
    scores: torch.Tensor = _per_object(torch.float32, required=True)  # [N], the box confidence
    labels: tuple[str, ...] = _per_object(None, required=True)  # the prompt words behind each box
    frame_index: torch.Tensor = _per_object(torch.int64, required=True)  # [N], which input frame the object is in
    image_size: tuple[int, int]  # (H, W) of every frame
    num_frames: int
    masks: torch.Tensor | None = _per_object(torch.bool, "HW")  # bool [N, H, W]
    # which phrase of the prompt (0-based, in " . " order) holds the box's best-scoring token; -1: not known
    phrase_index: torch.Tensor | None = _per_object(torch.int64, fill=-1)
    # the object's id through a clip (``GroundedSam.track``): the same object has the same id on every frame; -1: none
    track_id: torch.Tensor | None = _per_object(torch.int64, fill=-1)
    # through a clip, every label a detection gave the object, the first (its label) first, joined by
    # LABEL_SEPARATOR; "": not recorded
    labels_seen: tuple[str, ...] | None = _per_object(None, fill=0)

    @classmethod
    def per_object_fields(cls) -> tuple[tuple[str, PerObject], ...]:
        return tuple((f.name, f.metadata["per_object"]) for f in fields(cls) if "per_object" in f.metadata)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, spec in self.per_object_fields():
            value = getattr(self, name)
            if value is None:
                if spec.required:
                    raise ValueError(f"Detections.{name} is required")
                continue
            expected = (n,) if spec.dtype is None else (n, *spec.trailing(self.image_size))
            got = (len(value),) if spec.dtype is None else tuple(value.shape)
            if got != expected:
                raise ValueError(f"Detections.{name} has shape {got}, expected {expected}: the fields disagree on the objects")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls, num_frames: int, image_size: tuple[int, int], with_masks: bool = False) -> Detections:
        """No objects; optional fields with a fill value are present (and empty), masks only when asked."""
        values = {
            name: spec.filled(0, image_size)
            for name, spec in cls.per_object_fields()
            if spec.required or spec.fill is not None or (name == "masks" and with_masks)
        }
        return cls(image_size=tuple(image_size), num_frames=num_frames, **values)

    @classmethod
    def concat(cls, parts: list[Detections], num_frames: int, image_size: tuple[int, int]) -> Detections:
        """Join per-frame results; ``frame_index`` must already be set on each part.

        An optional field that some parts have and others lack is filled where its spec has a fill
        value (``phrase_index`` -1), and refused otherwise (``masks``): it is never silently dropped.
        """
        if not parts:
            return cls.empty(num_frames, image_size)
        values: dict[str, Any] = {}
        for name, spec in cls.per_object_fields():
            present = [getattr(p, name) is not None for p in parts]
            if not any(present):
                continue
            if not all(present) and spec.fill is None:
                raise ValueError(
                    f"cannot join detections where only some parts have {name}: {sum(present)} of {len(parts)} do "
                    f"(give every part {name} first)"
                )
            pieces = [getattr(p, name) if getattr(p, name) is not None else spec.filled(len(p), image_size) for p in parts]
            values[name] = tuple(x for piece in pieces for x in piece) if spec.dtype is None else torch.cat(pieces)
        return cls(image_size=tuple(image_size), num_frames=num_frames, **values)

    def select(self, keep: torch.Tensor) -> Detections:
        """Rows picked by a bool mask or an index tensor, in that order."""
        idx = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        rows = idx.tolist()
        changed: dict[str, Any] = {}
        for name, spec in self.per_object_fields():
            value = getattr(self, name)
            if value is not None:
                changed[name] = tuple(value[i] for i in rows) if spec.dtype is None else value[idx]
        return replace(self, **changed)

    def first(self, count: int | None) -> Detections:
        """The first ``count`` rows (all when ``count`` is None or 0)."""
        return self if not count or count >= len(self) else self.select(torch.arange(count))

    def for_frame(self, frame: int) -> Detections:
        """Frame ``frame``'s objects as a one-frame record (``num_frames`` 1, ``frame_index`` 0)."""
        one = self.select((self.frame_index == frame).nonzero().flatten())
        return replace(one, frame_index=torch.zeros(len(one), dtype=torch.int64), num_frames=1)

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
        if self.masks is None:
            raise ValueError("these detections have not been segmented yet")
        merged = torch.zeros((self.num_frames, h, w), dtype=torch.bool)
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
                    **({"track_id": int(self.track_id[i])} if self.track_id is not None else {}),
                    **({"mask_area": int(self.masks[i].sum())} if self.masks is not None else {}),
                    **({"labels_seen": self.labels_seen[i].split(LABEL_SEPARATOR)} if self.labels_seen and self.labels_seen[i] else {}),
                }
            )
        return rows


# Set bits in every byte value: a mask's area without unpacking it.
_BITS_IN_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


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

    @classmethod
    def concat(cls, parts: list[PackedMasks], image_size: tuple[int, int]) -> PackedMasks:
        height, width = image_size
        empty = np.zeros((0, height, (width + 7) // 8), dtype=np.uint8)
        return cls(np.concatenate([empty, *(p.bits for p in parts)]), width)

    def __len__(self) -> int:
        return int(self.bits.shape[0])

    def select(self, rows: torch.Tensor) -> PackedMasks:
        return PackedMasks(self.bits[rows.numpy()], self.width)

    def areas(self) -> torch.Tensor:
        """Pixels in each mask, without unpacking them all at once."""
        return torch.from_numpy(_BITS_IN_BYTE[self.bits].reshape(len(self), -1).sum(1).astype(np.int64))

    def union(self, rows: torch.Tensor) -> torch.Tensor:
        """bool ``[H, W]``: the masks of ``rows`` merged, ORed while packed (one mask unpacked, whatever their number)."""
        height = self.bits.shape[1]
        picked = self.bits[rows.numpy()]
        merged = np.bitwise_or.reduce(picked, axis=0) if len(picked) else np.zeros((height, self.bits.shape[2]), np.uint8)
        return torch.from_numpy(np.unpackbits(merged, axis=-1, count=self.width).view(np.bool_))

    def unpack(self) -> torch.Tensor:
        """The bool ``[N, H, W]`` masks that were packed."""
        return torch.from_numpy(np.unpackbits(self.bits, axis=-1, count=self.width).view(np.bool_))
