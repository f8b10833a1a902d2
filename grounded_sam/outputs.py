"""What ``grounded-sam segment`` writes: mask PNGs and a ``detections.json`` kept current after every image.

Each image's entry is appended to the JSON as soon as its masks are written, and the file is
a complete JSON list again after every image: a run that fails or is stopped midway still
leaves a report of everything written so far. Failed images are listed with why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from .preview import draw_preview
from .records import Detections

REPORT_NAME = "detections.json"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "object"


def write_mask(mask: np.ndarray, path: Path) -> None:
    """A mask as an 8-bit gray PNG of the image's size: 255 inside, 0 outside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


class SegmentReport:
    """The output folder of one run: the mask files, and the report that lists them."""

    def __init__(self, out: Path, per_object: bool, preview: bool = False) -> None:
        self.out = out
        self.per_object = per_object
        self.preview = preview
        self.count = 0
        out.mkdir(parents=True, exist_ok=True)
        self._file = open(out / REPORT_NAME, "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._file.write("[")
        self._end = self._file.tell()  # where the next entry goes: before the closing bracket
        self._close_list()

    def __enter__(self) -> SegmentReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def add_result(self, image: Path, stem: PurePosixPath, found: Detections, frame: torch.Tensor | None = None) -> dict[str, Any]:
        """Write one image's masks and add its entry (``found`` is that image's single frame, ``frame`` its uint8 pixels)."""
        mask_file = f"{stem}_mask.png"
        write_mask(found.merged_masks()[0].numpy(), self.out / mask_file)
        objects = found.to_json()
        digits = max(2, len(str(max(0, len(objects) - 1))))  # object numbers sort in object order
        for k, row in enumerate(objects):
            row.pop("frame")
            if self.per_object:
                name = f"{stem}_object{k:0{digits}d}_{slug(row['label'])}.png"
                write_mask(found.masks[k].numpy(), self.out / name)
                row["mask_file"] = name
        height, width = found.image_size
        entry = {"image": str(image), "width": width, "height": height, "mask_file": mask_file, "objects": objects}
        if self.preview and frame is not None:
            entry["preview_file"] = f"{stem}_preview.png"
            Image.fromarray(draw_preview(frame, found).numpy()).save(self.out / entry["preview_file"])
        self._add(entry)
        return entry

    def add_error(self, image: Path, message: str) -> None:
        self._add({"image": str(image), "error": message})

    def _add(self, entry: dict[str, Any]) -> None:
        self._file.seek(self._end)
        text = json.dumps(entry, indent=2).replace("\n", "\n  ")
        self._file.write(("," if self.count else "") + "\n  " + text)
        self._end = self._file.tell()
        self.count += 1
        self._close_list()

    def _close_list(self) -> None:
        self._file.write("\n]\n")
        self._file.truncate()
        self._file.flush()
