"""``RefineMask (segment anything)``: soft edges for any mask, frame by frame, and the cut-out's own colours."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..matting import RefineSettings, load_vitmatte, refine_alpha
from ..media.images import to_uint8_frames
from ..model_files.folders import VITMATTE_FOLDER, resolve_model
from . import adapter
from .loaded import shared_model

DEFAULTS = RefineSettings()  # the library's defaults are the node's
# what the node offers: the library's methods, with ViTMatte's two released sizes (fetched on first use)
METHODS = {
    "closed_form": ("closed_form", None),
    "guided_filter": ("guided_filter", None),
    "vitmatte (small)": ("vitmatte", "vitmatte-small-composition-1k (transformers)"),
    "vitmatte (base)": ("vitmatte", "vitmatte-base-composition-1k (transformers)"),
    "none": ("none", None),
}


def masks_for(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """bool ``[B, H, W]``: one mask per frame (a single mask serves every frame), the frames' size, or a clear error."""
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3):
        raise InputError(f"mask must be a MASK [B, H, W], got {getattr(mask, 'shape', type(mask).__name__)}")
    mask = mask.detach().cpu()
    mask = mask.unsqueeze(0) if mask.dim() == 2 else mask
    count, height, width = frames.shape[:3]
    if tuple(mask.shape[1:]) != (height, width):
        raise InputError(f"the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {width}x{height}: "
                         "connect the mask made from this image (same width and height)")  # fmt: skip
    if mask.shape[0] not in (1, count):
        raise InputError(f"{mask.shape[0]} masks for {count} frames: give one mask per frame, or one for all of them")
    return (mask > 0.5).expand(count, height, width)


class RefineMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {}),
                "mask": ("MASK", {"tooltip": "one per frame, or one for every frame; > 0.5 is the object"}),
                "method": (list(METHODS), {"default": DEFAULTS.method, "tooltip": "closed_form: PyMatting's closed-form matting, no weights; "
                           "guided_filter: fast, no weights; vitmatte: a learned model (hustvl, fetched on first use); none: levels only"}),
                "detail_erode": ("FLOAT", {"default": DEFAULTS.detail_erode, "min": 0.0, "max": 256.0, "step": 1.0,
                                 "tooltip": "band width inside the mask's edge, in pixels of a 1024-pixel image (scaled to this one)"}),
                "detail_dilate": ("FLOAT", {"default": DEFAULTS.detail_dilate, "min": 0.0, "max": 256.0, "step": 1.0,
                                  "tooltip": "band width outside the mask's edge, in pixels of a 1024-pixel image (scaled to this one)"}),
                "black_point": ("FLOAT", {"default": DEFAULTS.black_point, "min": 0.0, "max": 0.98, "step": 0.01}),
                "white_point": ("FLOAT", {"default": DEFAULTS.white_point, "min": 0.02, "max": 1.0, "step": 0.01}),
                "max_megapixels": ("FLOAT", {"default": DEFAULTS.max_megapixels, "min": 0.01, "max": 64.0, "step": 0.1,
                                   "tooltip": "larger frames are refined at this size and the alpha brought back up"}),
            }
        }  # fmt: skip

    CATEGORY = "segment_anything"
    FUNCTION = "main"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("alpha", "foreground")
    OUTPUT_TOOLTIPS = (
        "the soft alpha, 1 = the object (core JoinImageWithAlpha takes it inverted: InvertMask first)",
        "the object's own colours where it is see-through: no fringe of the old background in a cut-out",
    )

    def main(self, image, mask, method, detail_erode, detail_dilate, black_point, white_point, max_megapixels):
        if method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        library_method, repo = METHODS[method]
        settings = RefineSettings(library_method, detail_erode, detail_dilate, black_point, white_point, max_megapixels)
        frames = to_uint8_frames(image)
        masks = masks_for(frames, mask)
        model = None
        if repo is not None:
            path = resolve_model(repo, VITMATTE_FOLDER, adapter.model_search_dirs(VITMATTE_FOLDER), allow_download=True)
            model = shared_model(VITMATTE_FOLDER, path, lambda p: load_vitmatte(p, "cpu"))
            adapter.load_for_inference(model)
        progress, cancel = adapter.progress_reporter(frames.shape[0]), adapter.cancel_check()
        alphas, colours = [], []
        with adapter.library_numerics():
            for index in range(frames.shape[0]):  # the solvers ask ComfyUI whether to stop as they go, not only between frames
                matte = refine_alpha(frames[index].numpy(), masks[index].numpy(), settings, model, cancel)
                alphas.append(torch.from_numpy(matte.alpha))
                colours.append(torch.from_numpy(matte.foreground))
                if progress is not None:
                    progress(index + 1, frames.shape[0])
        return (torch.stack(alphas), torch.stack(colours))
