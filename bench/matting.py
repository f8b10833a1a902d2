"""Soft edges against ground truth: the Composition-1k errors of each weight-free method on the procedural set.

Each scene (tests/matting_scenes.py) composites a foreground with hair-like strands, a soft edge, a
hole and a veil over a crop of one of the shared photos; its coarse mask errs as SAM's do. The
table gives, averaged over the scenes: SAD, MSE, gradient and connectivity errors of the binary
mask and of each method (the library's defaults), the colour error of the cut-out in the band
against a naive ``image * alpha`` one, and the time per megapixel. With ``--picture`` it also
writes one scene as coarse mask | refined alpha | cut-out over a new background.

    python bench/matting.py [--picture docs/matting.jpg]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from matting_scenes import scene  # noqa: E402

from grounded_sam.matting import RefineSettings, refine_alpha  # noqa: E402
from grounded_sam.matting.metrics import connectivity_error, gradient_error, mse, sad  # noqa: E402
from grounded_sam.matting.trimap import UNKNOWN, make_trimap  # noqa: E402
from grounded_sam.media.images import load_image_file  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "images"
METHODS = ("none", "guided_filter", "closed_form")


def colour_error(foreground: np.ndarray, truth, band: np.ndarray) -> float:
    """Mean absolute colour error of the composited object (foreground x true alpha) inside the band."""
    weight = truth.alpha[..., None]
    return float(np.abs(weight * foreground - weight * truth.foreground)[band].mean())


def measure(scenes: list) -> dict[str, dict[str, float]]:
    defaults = RefineSettings()
    table = {}
    for method in METHODS:
        rows = []
        for s in scenes:
            refine_alpha(s.image, s.mask, RefineSettings(method))  # warm: PyMatting compiles on first use
            start = time.perf_counter()
            matte = refine_alpha(s.image, s.mask, RefineSettings(method))
            seconds = time.perf_counter() - start
            band = make_trimap(s.mask, defaults.detail_erode, defaults.detail_dilate) == UNKNOWN
            alpha = matte.alpha.astype(np.float64)
            rows.append({
                "SAD": sad(alpha, s.alpha), "MSE": mse(alpha, s.alpha), "gradient": gradient_error(alpha, s.alpha),
                "connectivity": connectivity_error(alpha, s.alpha), "colour": colour_error(matte.foreground, s, band),
                "naive colour": colour_error(s.image / 255.0, s, band), "s/MP": seconds / (s.mask.size / 1e6),
            })  # fmt: skip
        table[method] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return table


def markdown(table: dict[str, dict[str, float]], count: int) -> str:
    binary = table["none"]["SAD"]
    lines = [
        f"| method ({count} scenes, 640x480) | SAD | vs binary | MSE | gradient | connectivity | cut-out colour error (naive) | s / MP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"none": "binary mask (none)", "guided_filter": "guided_filter", "closed_form": "closed_form (default)"}
    for method, row in table.items():
        change = "" if method == "none" else f"{100 * (row['SAD'] / binary - 1):+.0f} %"
        colour = f"{row['colour']:.4f} ({row['naive colour']:.4f})"
        lines.append(f"| {names[method]} | {row['SAD']:.2f} | {change} | {row['MSE']:.5f} | {row['gradient']:.2f} | "
                     f"{row['connectivity']:.2f} | {colour} | {row['s/MP']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def picture(s, path: Path) -> None:
    """Image | coarse mask | refined alpha | cut-out (estimated colours over a new background), side by side."""
    matte = refine_alpha(s.image, s.mask, RefineSettings())
    backdrop = np.zeros_like(matte.foreground)
    backdrop[...] = (0.15, 0.45, 0.25)  # a green the scene never had: any fringe of the old background shows
    cutout = matte.alpha[..., None] * matte.foreground + (1 - matte.alpha[..., None]) * backdrop
    panels = [s.image / 255.0, np.repeat(s.mask[..., None], 3, axis=2).astype(np.float64), np.repeat(matte.alpha[..., None], 3, axis=2), cutout]
    rows, cols = np.nonzero(s.alpha > 0.01)  # the object and a margin, at full resolution: the edges are what to see
    top, bottom = max(0, rows.min() - 24), min(s.alpha.shape[0], rows.max() + 25)
    left, right = max(0, cols.min() - 24), min(s.alpha.shape[1], cols.max() + 25)
    row = np.concatenate([p[top:bottom, left:right] for p in panels], axis=1)
    Image.fromarray((row * 255).round().clip(0, 255).astype(np.uint8)).save(path, quality=92)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picture", type=Path, help="also write one scene: image | coarse mask | refined alpha | cut-out")
    args = parser.parse_args()
    photos = sorted(PHOTOS.glob("*.jpg"))
    scenes = [scene(load_image_file(p)[0].numpy(), seed) for seed, p in enumerate(photos)]
    print(markdown(measure(scenes), len(scenes)))
    if args.picture:
        picture(scenes[0], args.picture)
        print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
