"""A picture of what was found: each object's mask in its own colour, its outline, box and "label score".

Made to stay readable on small and large frames, with many objects, on dark and bright photos:
line widths and text size follow the frame size, masks are tinted (not painted over), labels
sit on a filled tag in the object's colour with black or white text (whichever reads better),
and a label that would cover a better-scoring object's label is left out rather than piled on.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..records import Detections

MASK_ALPHA = 0.45
GOLDEN_RATIO = 0.618033988749895


def object_colour(index: int) -> tuple[int, int, int]:
    """Well-separated hues for consecutive objects (golden-ratio steps around the colour wheel)."""
    hue = (0.1 + index * GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable built-in font (needs FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's border pixels, ``width`` thick: the mask minus its erosion."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def _overlaps(box: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed)


def draw_preview(frame: torch.Tensor, found: Detections) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` frame and its objects (one frame's ``Detections`` with masks) to a uint8 ``[H, W, 3]`` picture."""
    height, width = int(frame.shape[0]), int(frame.shape[1])
    side = min(height, width)
    line = max(1, round(side / 320))
    font = _font(int(np.clip(round(side / 45), 9, 40)))
    picture = frame.numpy().astype(np.float32)
    order = found.scores.argsort().tolist()  # worst first: the best objects end up on top
    # a tracked object keeps its colour on every frame (its id picks it); otherwise its row does
    keys = found.track_id.tolist() if found.track_id is not None else range(len(found))
    colours = {k: object_colour(key) for k, key in enumerate(keys)}
    if found.masks is not None:
        for k in order:
            mask = found.masks[k].numpy()
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                continue
            # work inside the mask's bounding rectangle (one pixel wider, so the outline sees the mask's edge)
            r0, r1 = max(0, rows[0] - 1), min(height, rows[-1] + 2)
            c0, c1 = max(0, cols[0] - 1), min(width, cols[-1] + 2)
            mask, region = mask[r0:r1, c0:c1], picture[r0:r1, c0:c1]
            colour = np.array(colours[k], dtype=np.float32)
            region[mask] = region[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
            region[_outline(mask, line)] = colour
    image = Image.fromarray(picture.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for k in order:
        x0, y0, x1, y1 = found.boxes[k].tolist()
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colours[k], width=line + 1)
    placed: list[tuple[float, float, float, float]] = []
    for k in reversed(order):  # best first: it gets its place, later labels give way
        text = f"{found.labels[k]} {float(found.scores[k]):.2f}"
        if found.track_id is not None:
            text = f"#{int(found.track_id[k])} {text}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * line + 2, bottom - top + 2 * line + 2
        x0, y0 = found.boxes[k].tolist()[:2]
        x = min(max(0.0, x0), max(0.0, width - w))
        y = y0 - h if y0 - h >= 0 else y0  # above the box, or inside its top edge at the frame's top
        y = min(max(0.0, y), max(0.0, height - h))
        tag = (x, y, x + w, y + h)
        if _overlaps(tag, placed):
            continue
        placed.append(tag)
        r, g, b = colours[k]
        ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
        draw.rectangle(tag, fill=colours[k])
        draw.text((x + line + 1 - left, y + line + 1 - top), text, fill=ink, font=font)
    return torch.from_numpy(np.asarray(image).copy())


def draw_previews(frames: torch.Tensor, found: Detections) -> torch.Tensor:
    """The preview of every frame of a uint8 ``[B, H, W, 3]`` batch, in order."""
    return torch.stack([draw_preview(frames[i], found.for_frame(i)) for i in range(frames.shape[0])])
