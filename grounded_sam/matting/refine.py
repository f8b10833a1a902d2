"""A coarse mask to a soft alpha matte and a cut-out without the old background's colour.

SAM's masks are binary at about 256x256 and upscaled, so hair, fur and lace are lost and edges are
jagged. Here the mask becomes a trimap (sure foreground, sure background, a band between), the band
is solved by a matting method, the levels are set, and the foreground colours are estimated so that
a cut-out carries no halo of the old background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import CancelledError, InputError
from .guided import guided_filter
from .trimap import BACKGROUND, FOREGROUND, make_trimap, scaled_width
from .vitmatte import VitMatte

# "none": the mask as it is (levels still apply); "guided_filter": weight-free, fast; "closed_form":
# PyMatting's closed-form matting, weight-free, slower; "vitmatte": a learned model (needs its weights).
MATTING_METHODS = ("guided_filter", "closed_form", "vitmatte", "none")


@dataclass(frozen=True)
class RefineSettings:
    """How a mask is refined; the defaults are the node's and the command's (closed-form over a 12 + 24 pixel band)."""

    method: str = "closed_form"
    detail_erode: float = 12.0  # width of the band inside the mask's edge, pixels at a 1024-pixel long side
    detail_dilate: float = 24.0  # and outside it: SAM's masks more often miss hair than take in background
    black_point: float = 0.01  # alpha at or below this becomes 0
    white_point: float = 0.99  # alpha at or above this becomes 1
    max_megapixels: float = 1.0  # larger frames are refined at this size and the alpha brought back up

    def __post_init__(self) -> None:
        if self.method not in MATTING_METHODS:
            raise InputError(f"method must be one of {', '.join(MATTING_METHODS)}, got {self.method!r}")
        if self.detail_erode < 0 or self.detail_dilate < 0:
            raise InputError(f"detail_erode and detail_dilate must be >= 0, got {self.detail_erode} and {self.detail_dilate}")
        if self.method != "none" and self.detail_erode == 0 and self.detail_dilate == 0:  # every other method solves the band
            raise InputError(f"{self.method} refines the band between detail_erode and detail_dilate: with both 0 there is none "
                             "to refine (set one above 0, or use method 'none')")  # fmt: skip
        if not 0.0 <= self.black_point < self.white_point <= 1.0:
            raise InputError(f"need 0 <= black_point < white_point <= 1, got {self.black_point} and {self.white_point}")
        if not self.max_megapixels > 0:
            raise InputError(f"max_megapixels must be > 0, got {self.max_megapixels}")


@dataclass(frozen=True)
class Matte:
    alpha: np.ndarray  # float32 [H, W], 0..1
    foreground: np.ndarray  # float32 [H, W, 3], 0..1: the object's own colours, to composite with ``alpha``


def _pymatting():  # noqa: ANN202 - the module
    try:
        import pymatting
    except ImportError as err:
        raise InputError("this matting step needs PyMatting: pip install pymatting") from err
    return pymatting


def _resized(image: np.ndarray, mask: np.ndarray, max_megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = mask.shape
    scale = min(1.0, (max_megapixels * 1e6 / (height * width)) ** 0.5)
    if scale >= 1.0:
        return image, mask
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
    return small, small_mask


Cancel = Callable[[], bool | None]  # a host's "stop?" question, as RunHooks.check_cancel


def _checker(check_cancel: Cancel | None) -> Callable[[], None]:
    """A call that raises ``CancelledError`` when the host says stop (or lets the host's own exception through)."""

    def check() -> None:
        if check_cancel is not None and check_cancel():
            raise CancelledError("refinement stopped by the caller")

    return check


def _solve(method: str, image: np.ndarray, mask: np.ndarray, trimap: np.ndarray, settings: RefineSettings, model: VitMatte | None,
           check: Callable[[], None]) -> np.ndarray:  # fmt: skip
    if method == "none":
        return mask.astype(np.float64)
    if method == "guided_filter":
        radius = max(scaled_width(settings.detail_erode, mask.shape), scaled_width(settings.detail_dilate, mask.shape))
        gray = image.astype(np.float64).mean(axis=2) / 255.0
        return np.clip(guided_filter(gray, mask.astype(np.float64), radius, eps=1e-3), 0.0, 1.0)
    if method == "closed_form":
        # the solver asks after every iteration: a stop lands mid-frame, once the system is built (about 1.2 s a megapixel)
        return _pymatting().estimate_alpha_cf(image.astype(np.float64) / 255.0, trimap, cg_kwargs={"callback": lambda *_: check()})
    if model is None:
        raise InputError("method 'vitmatte' needs a ViTMatte model (load_vitmatte('vitmatte-small-composition-1k'))")
    return np.clip(model.alpha(image, trimap, check), 0.0, 1.0)


def refine_alpha(image: np.ndarray, mask: np.ndarray, settings: RefineSettings | None = None, vitmatte: VitMatte | None = None,
                 check_cancel: Cancel | None = None) -> Matte:  # fmt: skip
    """The soft alpha and foreground colours of ``mask`` (bool ``[H, W]``) in ``image`` (uint8 ``[H, W, 3]``).

    ``check_cancel`` is asked between steps and inside the solvers; True stops with ``CancelledError``.
    """
    settings = settings or RefineSettings()
    image = np.ascontiguousarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"the image must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    if mask.shape != image.shape[:2]:
        raise InputError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}: "
                         "give the mask of this image (same width and height)")  # fmt: skip
    mask = mask > 0.5 if mask.dtype != bool else mask
    if not mask.any() or mask.all():  # nothing to refine: an empty or full alpha, the image's own colours
        alpha = mask.astype(np.float32)
        return Matte(alpha, image.astype(np.float32) / 255.0)
    check = _checker(check_cancel)
    check()
    small_image, small_mask = _resized(image, mask, settings.max_megapixels)
    trimap = make_trimap(small_mask, settings.detail_erode, settings.detail_dilate)
    alpha = _solve(settings.method, small_image, small_mask, trimap, settings, vitmatte, check)
    if settings.method != "none":  # what the trimap is sure of stays sure
        alpha = _keep_sure(alpha, trimap)
    alpha = _levels(alpha, settings)
    check()
    foreground = estimate_foreground(small_image, alpha)
    if alpha.shape != mask.shape:  # refined smaller: back to full size, where pixels far from the edge are sure too
        alpha = _keep_sure(_resize(alpha, mask.shape), make_trimap(mask, settings.detail_erode, settings.detail_dilate))
        colours = image.astype(np.float64) / 255.0
        foreground = np.where((alpha >= 1.0)[..., None], colours, np.clip(_resize(foreground, mask.shape), 0.0, 1.0))
    return Matte(alpha.astype(np.float32), foreground.astype(np.float32))


def _keep_sure(alpha: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    return np.where(trimap == FOREGROUND, 1.0, np.where(trimap == BACKGROUND, 0.0, alpha))


def _levels(alpha: np.ndarray, settings: RefineSettings) -> np.ndarray:
    return np.clip((alpha - settings.black_point) / (settings.white_point - settings.black_point), 0.0, 1.0)


def _resize(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear, per channel, in float32."""
    planes = values[..., None] if values.ndim == 2 else values
    out = np.stack([np.asarray(Image.fromarray(planes[..., c].astype(np.float32)).resize((shape[1], shape[0]), Image.BILINEAR))
                    for c in range(planes.shape[2])], axis=-1).astype(np.float64)  # fmt: skip
    return out[..., 0] if values.ndim == 2 else out


def estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The object's own colours where it is partly transparent (PyMatting's multilevel estimation), so that
    ``foreground * alpha`` over a new background shows no fringe of the old one."""
    colours = image.astype(np.float64) / 255.0
    if not ((alpha > 0) & (alpha < 1)).any():
        return colours
    return np.clip(_pymatting().estimate_foreground_ml(colours, alpha), 0.0, 1.0)
