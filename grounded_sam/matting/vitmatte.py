"""ViTMatte (Yao et al., 2024): a learned matting model, run as transformers' processor and model run it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..model_files.checkpoints import load_complete_folder
from ..runtime.devices import resolve_device
from ..runtime.placement import ModelPlacement
from ..runtime.run_hooks import repeated_layers
from .trimap import FOREGROUND, UNKNOWN


class VitMatte(ModelPlacement):
    """A transformers ``VitMatteForImageMatting`` folder with its image processor (the hub's ``hustvl/vitmatte-*``)."""

    def __init__(self, model: torch.nn.Module, processor, name: str) -> None:  # noqa: ANN001 - transformers' VitMatteImageProcessor
        self.model = model.eval()
        self.processor = processor
        self.name = name

    @torch.inference_mode()
    def alpha(self, image: np.ndarray, trimap: np.ndarray, check: Callable[[], None] | None = None) -> np.ndarray:
        """float ``[H, W]`` alpha for uint8 ``image`` ``[H, W, 3]`` and a 0 / 0.5 / 1 ``trimap`` ``[H, W]``;
        ``check`` runs before each of the ViT's blocks (it raises to stop)."""
        levels = np.select([trimap == FOREGROUND, trimap == UNKNOWN], [255, 128], 0).astype(np.uint8)  # a trimap image: 0 / 128 / 255
        inputs = self.processor(images=image, trimaps=levels, return_tensors="pt")
        owner = threading.get_ident()

        def step(*_) -> None:  # only in this run's thread: another run may share the model
            if threading.get_ident() == owner:
                check()

        handles = [layer.register_forward_pre_hook(step) for layer in repeated_layers(self.model)] if check else []
        try:
            alphas = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).alphas
        finally:
            for handle in handles:
                handle.remove()
        height, width = trimap.shape
        return alphas[0, 0, :height, :width].float().cpu().numpy().astype(np.float64)


def load_vitmatte(path: str | Path, device: str | torch.device = "auto") -> VitMatte:
    """A ``hustvl/vitmatte-small-composition-1k`` / ``vitmatte-base-composition-1k`` style transformers folder."""
    from transformers import VitMatteForImageMatting, VitMatteImageProcessor

    path = Path(path)
    target = resolve_device(device)
    if not (path / "config.json").is_file():
        raise ModelFileError(f"{path} is not a transformers ViTMatte folder (no config.json): put hustvl/vitmatte-small-composition-1k there")
    model = load_complete_folder(VitMatteForImageMatting, path, "ViTMatte")
    try:
        processor = VitMatteImageProcessor.from_pretrained(path, local_files_only=True)
    except OSError as err:
        raise ModelFileError(f"{path} has no image processor settings (preprocessor_config.json): {err}") from err
    width = model.config.backbone_config.hidden_size
    return VitMatte(model, processor, f"ViTMatte ({'small' if width <= 384 else 'base'})").to(target)
