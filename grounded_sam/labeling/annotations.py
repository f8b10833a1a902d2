"""One image's objects as COCO annotations: masks as RLE (pycocotools), boxes as [x, y, w, h].

A result is turned into plain JSON as soon as it exists, so no mask outlives its image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ..records import Detections
from .sources import ImageItem


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """bool ``[N, H, W]`` masks as COCO compressed RLE, ``counts`` as text (JSON-ready)."""
    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded]


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """One RLE back to a bool ``[H, W]`` mask."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def image_record(item: ImageItem, found: Detections) -> dict[str, Any]:
    """The result line of one image: its size and its objects (category = the prompt phrase, 1-based)."""
    if found.masks is None or found.phrase_index is None:
        raise ValueError("labelling needs segmented detections with their phrase index")
    height, width = found.image_size
    rles = encode_masks(found.masks.numpy())
    areas = mask_utils.area([{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]) if rles else []
    annotations = []
    for k, rle in enumerate(rles):
        x0, y0, x1, y1 = (float(v) for v in found.boxes[k].tolist())
        annotations.append(
            {
                "category_id": int(found.phrase_index[k]) + 1,
                "label": found.labels[k],
                "score": round(float(found.scores[k]), 6),
                "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                "area": int(areas[k]),
                "segmentation": rle,
            }
        )
    return {"id": item.id, "file_name": item.file_name, "path": item.path, "width": width, "height": height,
            "annotations": annotations}  # fmt: skip


def error_record(item: ImageItem, message: str) -> dict[str, Any]:
    return {"id": item.id, "file_name": item.file_name, "path": item.path, "error": message}
