"""The final files of a labelling job, assembled from its result lines one image at a time.

Only an index (image name -> byte offset) is held in memory, never the results, so a 100,000
image job exports in constant memory. Images come out in the job's order whatever order the
workers finished them in; an image's latest line wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import decode_mask
from .sources import ImageItem
from .store import RESULTS_FILE

COCO_FILE = "coco.json"
YOLO_FOLDER = "yolo"


def index_results(results: Path) -> dict[str, int]:
    """Byte offset of each image's latest complete line."""
    offsets: dict[str, int] = {}
    if not results.exists():
        return offsets
    with open(results, "rb") as f:
        while True:
            offset = f.tell()
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            offsets[json.loads(line)["file_name"]] = offset
    return offsets


def results_in_order(results: Path, items: list[ImageItem]) -> Iterator[tuple[ImageItem, dict[str, Any]]]:
    """(item, result line) for each item with a result, in the items' order."""
    offsets = index_results(results)
    with open(results, "rb") as f:
        for item in items:
            if item.file_name in offsets:
                f.seek(offsets[item.file_name])
                yield item, json.loads(f.readline())


def _replace_atomically(path: Path, write) -> None:  # noqa: ANN001 - write(file)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        write(f)
    os.replace(partial, path)


def write_coco(out: Path, items: list[ImageItem], categories: list[dict[str, Any]]) -> dict[str, int]:
    """``coco.json`` (COCO instances: images, annotations with RLE masks and scores, categories)."""
    results = out / RESULTS_FILE
    counts = {"images": 0, "annotations": 0}

    def write(f) -> None:  # noqa: ANN001
        f.write('{"info": {"description": "grounded-sam labels"},\n"categories": ' + json.dumps(categories) + ',\n"images": [')
        for n, (item, record) in enumerate(results_in_order(results, items)):
            image = {"id": item.id, "file_name": item.file_name, "width": record["width"], "height": record["height"]}
            f.write(("," if n else "") + "\n" + json.dumps(image))
            counts["images"] += 1
        f.write('\n],\n"annotations": [')
        for item, record in results_in_order(results, items):
            for annotation in record["annotations"]:
                counts["annotations"] += 1
                row = {"id": counts["annotations"], "image_id": item.id, "iscrowd": 0, **annotation}
                f.write(("," if counts["annotations"] > 1 else "") + "\n" + json.dumps(row))
        f.write("\n]}\n")

    _replace_atomically(out / COCO_FILE, write)
    return counts


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The outline of a mask's largest part as ``[K, 2]`` (x, y) pixel points, or None if it has no area."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    return max(contours, key=cv2.contourArea).reshape(-1, 2)


def yolo_lines(record: dict[str, Any]) -> list[str]:
    """YOLO segmentation rows: ``class x1 y1 x2 y2 ...`` with coordinates divided by the image's size."""
    width, height = record["width"], record["height"]
    lines = []
    for annotation in record["annotations"]:
        polygon = mask_polygon(decode_mask(annotation["segmentation"]))
        if polygon is None:
            continue
        points = polygon.astype(np.float64) / np.array([width, height])
        coords = " ".join(f"{v:.6f}" for v in points.clip(0, 1).ravel())
        lines.append(f"{annotation['category_id'] - 1} {coords}")
    return lines


def write_yolo(out: Path, items: list[ImageItem], categories: list[dict[str, Any]]) -> int:
    """``yolo/``: ``labels/<name>.txt`` per labelled image, ``images/`` linking to the images, ``data.yaml``.

    Ultralytics finds an image's labels by putting ``labels`` for ``images`` in its path, hence
    the links; where links cannot be made, ``images.txt`` lists the images' own paths.
    """
    root = out / YOLO_FOLDER
    written = 0
    listed = []
    for item, record in results_in_order(out / RESULTS_FILE, items):
        stem = Path(item.file_name).with_suffix("")
        label_file = root / "labels" / stem.with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        lines = yolo_lines(record)
        label_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        link = root / "images" / item.file_name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            try:
                link.symlink_to(os.path.abspath(item.path))
            except OSError:
                pass
        listed.append(str(link.absolute()) if link.is_symlink() else os.path.abspath(item.path))
        written += 1
    (root / "images.txt").write_text("".join(p + "\n" for p in listed), encoding="utf-8")
    names = "\n".join(f"  {c['id'] - 1}: {json.dumps(c['name'])}" for c in categories)
    (root / "data.yaml").write_text(
        f"# written by grounded-sam label\npath: {json.dumps(str(root.absolute()))}\ntrain: images.txt\nval: images.txt\nnames:\n{names}\n",
        encoding="utf-8",
    )
    return written
