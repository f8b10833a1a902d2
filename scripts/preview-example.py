"""Draw docs/preview-*.jpg: the preview on shared photos with hand-placed objects (no trained weights here).

Objects are ellipses inside hand-picked boxes: large and small ones, many at once, on the photo
as it is, darkened and brightened, so the picture's readability can be judged by eye.
Run: python scripts/preview-example.py [../shared/images]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from grounded_sam.media.images import load_image_file
from grounded_sam.media.preview import draw_preview
from grounded_sam.records import Detections

ROOT = Path(__file__).resolve().parents[1]


def ellipse_objects(size: tuple[int, int], boxes: list[tuple[float, float, float, float]], labels: list[str]) -> Detections:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    masks = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1)
    n = len(boxes)
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32), scores=torch.linspace(0.92, 0.35, n), labels=tuple(labels),
        frame_index=torch.zeros(n, dtype=torch.int64), image_size=(h, w), num_frames=1, masks=torch.from_numpy(np.stack(masks)),
    )  # fmt: skip


def main() -> None:
    images = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "images"
    bus = load_image_file(images / "bus.jpg")[0]
    few = ellipse_objects(
        bus.shape[:2],
        [(50, 400, 245, 905), (222, 408, 345, 860), (670, 395, 810, 880), (17, 230, 801, 750), (275, 480, 290, 510)],
        ["person", "person", "person", "bus", "tie"],
    )
    rng = np.random.default_rng(0)
    corners = rng.uniform([0, 0], [760, 1030], size=(60, 2))
    many = ellipse_objects(
        bus.shape[:2], [(x, y, x + s, y + s) for (x, y), s in zip(corners, rng.uniform(12, 160, 60), strict=True)],
        [["window", "person", "wheel", "sign"][i % 4] for i in range(60)],
    )  # fmt: skip
    variants = {
        "preview-bus.jpg": (bus, few),
        "preview-bus-dark.jpg": ((bus.float() * 0.15).to(torch.uint8), few),
        "preview-bus-bright.jpg": ((bus.float() * 0.2 + 204).to(torch.uint8), few),
        "preview-bus-many.jpg": (bus, many),
    }
    for name, (frame, found) in variants.items():
        picture = Image.fromarray(draw_preview(frame, found).numpy())
        picture.thumbnail((540, 720))
        picture.save(ROOT / "docs" / name, quality=88)
        print(ROOT / "docs" / name)


if __name__ == "__main__":
    main()
