"""What ``grounded-sam segment`` writes: mask PNGs and a ``detections.json`` kept current after every image.

Each image's entry is appended to the JSON as soon as its masks are written, and the file is
a complete JSON list again after every image: a run that fails or is stopped midway still
leaves a report of everything written so far. Failed images are listed with why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..records import Detections
from .preview import draw_preview

REPORT_NAME = "detections.json"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "object"


def write_mask(mask: np.ndarray, path: Path) -> None:
    """A mask as an 8-bit gray PNG of the image's size: 255 inside, 0 outside; a float alpha as 0..255."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = mask.astype(np.uint8) * 255 if mask.dtype == bool else np.clip(np.round(mask * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(values, mode="L").save(path)


def write_cutout(foreground: np.ndarray, alpha: np.ndarray, path: Path) -> None:
    """An RGBA PNG: the object's colours (0..1 floats) and its alpha."""
    rgba = np.concatenate([foreground, alpha[..., None]], axis=-1)
    Image.fromarray(np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8), mode="RGBA").save(path)


class JsonListFile:
    """A JSON list written one entry at a time, a complete JSON document again after every entry."""

    def __init__(self, path: Path) -> None:
        self.count = 0
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._file.write("[")
        self._end = self._file.tell()  # where the next entry goes: before the closing bracket
        self._close_list()

    def add(self, entry: dict[str, Any]) -> None:
        self._file.seek(self._end)
        text = json.dumps(entry, indent=2).replace("\n", "\n  ")
        self._file.write(("," if self.count else "") + "\n  " + text)
        self._end = self._file.tell()
        self.count += 1
        self._close_list()

    def close(self) -> None:
        self._file.close()

    def _close_list(self) -> None:
        self._file.write("\n]\n")
        self._file.truncate()
        self._file.flush()


class SegmentReport:
    """The output folder of one run: the mask files, and the report that lists them.

    ``refine`` (image, mask -> ``matting.Matte``) writes the masks as soft 8-bit alpha; ``cutout`` writes
    ``<name>_cutout.png``, the object's own colours with the merged mask's alpha.
    """

    def __init__(self, out: Path, per_object: bool, preview: bool = False, refine: Callable | None = None, cutout: bool = False) -> None:
        self.out = out
        self.per_object = per_object
        self.preview = preview
        self.refine = refine
        self.cutout = cutout
        out.mkdir(parents=True, exist_ok=True)
        self._report = JsonListFile(out / REPORT_NAME)

    def __enter__(self) -> SegmentReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self._report.close()

    @property
    def count(self) -> int:
        return self._report.count

    def add_result(self, image: Path, stem: PurePosixPath, found: Detections, frame: torch.Tensor | None = None) -> dict[str, Any]:
        """Write one image's masks and add its entry (``found`` is that image's single frame, ``frame`` its uint8 pixels)."""
        mask_file = f"{stem}_mask.png"
        merged = found.merged_masks()[0].numpy()
        matte = self._matte(frame, merged)
        write_mask(merged if matte is None else matte.alpha, self.out / mask_file)
        if self.cutout and frame is not None:
            from ..matting import estimate_foreground

            alpha = merged.astype(np.float32) if matte is None else matte.alpha
            colours = estimate_foreground(frame.numpy(), alpha) if matte is None else matte.foreground
            write_cutout(colours, alpha, self.out / f"{stem}_cutout.png")
        objects = found.to_json()
        digits = max(2, len(str(max(0, len(objects) - 1))))  # object numbers sort in object order
        for k, row in enumerate(objects):
            row.pop("frame")
            if self.per_object:
                name = f"{stem}_object{k:0{digits}d}_{slug(row['label'])}.png"
                matte = self._matte(frame, found.masks[k].numpy())
                write_mask(found.masks[k].numpy() if matte is None else matte.alpha, self.out / name)
                row["mask_file"] = name
        height, width = found.image_size
        entry = {"image": str(image), "width": width, "height": height, "mask_file": mask_file, "objects": objects}
        if self.preview and frame is not None:
            entry["preview_file"] = f"{stem}_preview.png"
            Image.fromarray(draw_preview(frame, found).numpy()).save(self.out / entry["preview_file"])
        self._add(entry)
        return entry

    def _matte(self, frame: torch.Tensor | None, mask: np.ndarray):  # noqa: ANN202 - a matting.Matte or None
        if self.refine is None or frame is None:
            return None
        return self.refine(frame.numpy(), mask)

    def add_error(self, image: Path, message: str) -> None:
        self._add({"image": str(image), "error": message})

    def _add(self, entry: dict[str, Any]) -> None:
        self._report.add(entry)
