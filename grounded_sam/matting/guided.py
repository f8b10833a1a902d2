"""The fast guided filter (He and Sun, 2015): edge-aware smoothing of a coarse alpha, guided by the image.

Weight-free and linear in the number of pixels: the filter fits, in every window, alpha as a
linear function of the image's gray level, so the alpha's edges move to the image's edges. The
coefficients are computed on a subsampled image and brought back up, as the fast variant does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.uniform_filter(x, size=2 * radius + 1, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float = 1e-3, subsample: int = 4) -> np.ndarray:
    """``source`` ``[H, W]`` filtered with ``guide`` ``[H, W]`` (both 0..1 floats); ``radius`` in full-size pixels."""
    step = max(1, min(subsample, radius))
    small = (slice(None, None, step), slice(None, None, step))
    guide_s, source_s = guide[small], source[small]
    r = max(1, radius // step)
    mean_i, mean_p = _box(guide_s, r), _box(source_s, r)
    var_i = _box(guide_s * guide_s, r) - mean_i * mean_i
    cov_ip = _box(guide_s * source_s, r) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = _box(a, r), _box(b, r)
    zoom = (guide.shape[0] / mean_a.shape[0], guide.shape[1] / mean_a.shape[1])
    up_a = ndimage.zoom(mean_a, zoom, order=1, mode="nearest", grid_mode=True)[: guide.shape[0], : guide.shape[1]]
    up_b = ndimage.zoom(mean_b, zoom, order=1, mode="nearest", grid_mode=True)[: guide.shape[0], : guide.shape[1]]
    return up_a * guide + up_b
