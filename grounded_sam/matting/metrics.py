"""The Composition-1k matting errors (Xu et al., 2017; Rhemann et al., 2009): SAD, MSE, gradient and connectivity.

Computed over the whole frame here (the benchmark counts the trimap's unknown band only; the
coarse masks of our test set are wrong outside any band, so the whole frame is what is fair).
Alphas are 0..1 floats. SAD is reported in thousands, gradient and connectivity errors in
thousands as well, as the benchmark tables do.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def sad(alpha: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(alpha - truth).sum() / 1000.0)


def mse(alpha: np.ndarray, truth: np.ndarray) -> float:
    return float(((alpha - truth) ** 2).mean())


def gradient_error(alpha: np.ndarray, truth: np.ndarray, sigma: float = 1.4) -> float:
    """Sum of squared differences of the Gaussian-derivative gradient magnitudes (both normalised to [0, 1])."""

    def magnitude(x: np.ndarray) -> np.ndarray:
        gx = ndimage.gaussian_filter(x, sigma, order=(0, 1))
        gy = ndimage.gaussian_filter(x, sigma, order=(1, 0))
        m = np.hypot(gx, gy)
        return m / m.max() if m.max() > 0 else m

    return float(((magnitude(alpha) - magnitude(truth)) ** 2).sum() / 1000.0)


def connectivity_error(alpha: np.ndarray, truth: np.ndarray, step: float = 0.1) -> float:
    """How differently each pixel is connected to the main body of the matte (Rhemann et al.; the benchmark's code)."""
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    level = np.full(alpha.shape, -1.0)  # the threshold at which a pixel leaves the main 4-connected body
    for i in range(1, len(thresholds)):
        labels, count = ndimage.label((alpha >= thresholds[i]) & (truth >= thresholds[i]))
        main = np.zeros(alpha.shape, dtype=bool)
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            main = labels == sizes.argmax()
        level[(level == -1) & ~main] = thresholds[i - 1]
    level[level == -1] = 1.0

    def phi(x: np.ndarray) -> np.ndarray:
        d = x - level
        return 1.0 - d * (d >= 0.15)

    return float(np.abs(phi(alpha) - phi(truth)).sum() / 1000.0)
