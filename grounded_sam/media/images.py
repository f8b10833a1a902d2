"""Turn whatever image a caller hands us into the one form both models start from.

Both reference pipelines begin from 8-bit RGB (the seed pack did
``np.clip(255 * x, 0, 255).astype(uint8)``), so we do the same, once, here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

_CHANNELS_HELP = "expected an IMAGE shaped [B, H, W, C] (channels last) with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)"


def to_uint8_frames(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A ComfyUI-style IMAGE (or a single ``[H, W, C]`` frame) as uint8 RGB ``[B, H, W, 3]``.

    Floats are read as 0..1, uint8 as 0..255; alpha is dropped, gray is repeated to RGB,
    NaN becomes 0 (with a warning) so one bad pixel does not stop a whole batch.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise InputError(f"{_CHANNELS_HELP}; got a {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise InputError(f"{_CHANNELS_HELP}; got shape {tuple(image.shape)}")
    b, h, w, c = image.shape
    if c not in (1, 2, 3, 4):
        hint = " (it looks channels-first: permute it to [B, H, W, C])" if image.shape[1] in (1, 3, 4) else ""
        raise InputError(f"{_CHANNELS_HELP}; got shape {tuple(image.shape)}{hint}")
    if b == 0 or h == 0 or w == 0:
        raise InputError(f"the image is empty (shape {tuple(image.shape)}): every side must be at least 1 pixel")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        frames = image
    elif image.dtype.is_floating_point:
        image = image.float()
        if torch.isnan(image).any():
            warnings.warn("the image has NaN pixels; they are treated as black", stacklevel=2)
            image = torch.nan_to_num(image, nan=0.0)
        frames = (image * 255.0).clamp(0, 255).to(torch.uint8)
    else:
        raise InputError(f"unsupported image dtype {image.dtype}: use float (0..1) or uint8 (0..255)")
    if c in (1, 2):
        frames = frames[..., :1].expand(b, h, w, 3)
    return frames[..., :3].contiguous()


def to_comfy_image(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` back to ComfyUI's float32 0..1."""
    return frames_uint8.float().div_(255.0)


def load_image_file(path: str | Path) -> torch.Tensor:
    """An image file as uint8 RGB ``[1, H, W, 3]``; alpha and palettes are flattened away."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from err
    return to_uint8_frames(torch.from_numpy(rgb.copy()))
