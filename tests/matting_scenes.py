"""Alpha mattes with a known answer: procedural foregrounds composited over the shared photos.

Each scene has fine structure a binary mask cannot hold: a body with a soft edge, hair-like strands
a pixel or two wide, a hole, and a semi-transparent veil. Its coarse mask errs the way SAM does:
binarised, blocky at a quarter of the resolution, and a few pixels off along the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]: alpha * foreground + (1 - alpha) * background
    alpha: np.ndarray  # float64 [H, W]: the truth
    foreground: np.ndarray  # float64 [H, W, 3]: the truth, 0..1
    mask: np.ndarray  # bool [H, W]: a coarse mask, as SAM would give


def _strands(size: tuple[int, int], rng: np.random.Generator, centre: tuple[float, float], radius: tuple[float, float]) -> np.ndarray:
    """Hair: curves from the body's upper edge outwards, drawn at 4x and averaged down (fractional coverage)."""
    h, w = size
    canvas = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    cy, cx = centre
    ry, rx = radius
    for _ in range(45):
        angle = rng.uniform(-np.pi * 0.95, -np.pi * 0.05)  # the upper half
        x0, y0 = cx + rx * np.cos(angle) * 0.92, cy + ry * np.sin(angle) * 0.92
        length = rng.uniform(0.08, 0.22) * max(rx, ry)
        bend = rng.uniform(-0.6, 0.6)
        points = []
        for t in np.linspace(0, 1, 24):
            a = angle + bend * t
            points.append(((x0 + length * t * np.cos(a)) * SUPERSAMPLE, (y0 + length * t * np.sin(a)) * SUPERSAMPLE))
        width = int(rng.integers(2, 7))  # 0.5 to 1.5 pixels wide
        draw.line(points, fill=int(rng.uniform(160, 255)), width=width)
    coverage = np.asarray(canvas, dtype=np.float64) / 255.0
    return coverage.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def synthetic_alpha(size: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    centre = (h * rng.uniform(0.5, 0.6), w * rng.uniform(0.4, 0.6))
    radius = (h * rng.uniform(0.22, 0.3), w * rng.uniform(0.2, 0.28))
    body = (((ys - centre[0]) / radius[0]) ** 2 + ((xs - centre[1]) / radius[1]) ** 2 <= 1.0).astype(np.float64)
    body = ndimage.gaussian_filter(body, rng.uniform(0.8, 2.0))  # a soft edge
    hole = ((ys - centre[0] - radius[0] * 0.2) ** 2 + (xs - centre[1]) ** 2) <= (min(radius) * 0.25) ** 2
    body[hole] = 0.0
    body = ndimage.gaussian_filter(body, 0.7)
    # a semi-transparent fringe along the lower edge (a veil, a sleeve of lace), a dozen pixels deep
    ring = (((ys - centre[0]) / (radius[0] + 12)) ** 2 + ((xs - centre[1]) / (radius[1] + 12)) ** 2 <= 1.0) & (ys > centre[0] + radius[0] * 0.3)
    veil = ndimage.gaussian_filter(ring * rng.uniform(0.35, 0.6), 1.0)
    return np.clip(np.maximum(np.maximum(body, veil), _strands(size, rng, centre, radius)), 0.0, 1.0)


def synthetic_foreground(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth, saturated colour field with a little texture: unlike the photos behind it."""
    rng = np.random.default_rng(seed + 1000)
    h, w = size
    base = rng.uniform(0.1, 0.9, 3)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (h, w, 3)), (h / 8, w / 8, 0)) * 8
    texture = ndimage.gaussian_filter(rng.normal(0, 0.04, (h, w, 3)), (1, 1, 0))
    return np.clip(base + 0.25 * np.tanh(field) + texture, 0.0, 1.0)


def coarse_mask(alpha: np.ndarray, seed: int, block: int = 4, shift: int = 2) -> np.ndarray:
    """Binarised, blocky at 1/``block`` resolution, and ``shift`` pixels off along the edge (in or out, by part)."""
    rng = np.random.default_rng(seed + 2000)
    h, w = alpha.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((hb * block, wb * block))
    padded[:h, :w] = alpha
    low = padded.reshape(hb, block, wb, block).mean(axis=(1, 3)) > 0.5
    mask = np.repeat(np.repeat(low, block, axis=0), block, axis=1)[:h, :w]
    grown = ndimage.binary_dilation(mask, iterations=shift)
    shrunk = ndimage.binary_erosion(mask, iterations=shift)
    side = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 12) > 0  # where the edge errs outwards
    return np.where(side, grown, shrunk)


def scene(background: np.ndarray, seed: int, size: tuple[int, int] = (480, 640)) -> Scene:
    """A scene over a crop of ``background`` (uint8 [H, W, 3], at least ``size``)."""
    h, w = size
    rng = np.random.default_rng(seed + 3000)
    top, left = int(rng.integers(0, background.shape[0] - h + 1)), int(rng.integers(0, background.shape[1] - w + 1))
    back = background[top : top + h, left : left + w].astype(np.float64) / 255.0
    alpha = synthetic_alpha(size, seed)
    fore = synthetic_foreground(size, seed)
    image = alpha[..., None] * fore + (1 - alpha[..., None]) * back
    return Scene((image * 255).round().clip(0, 255).astype(np.uint8), alpha, fore, coarse_mask(alpha, seed))
