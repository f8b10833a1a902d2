"""Boxes in, masks out with SAM 2 / 2.1: Meta's ``SAM2ImagePredictor`` steps around transformers' ``Sam2Model``.

Unlike SAM 1, SAM 2 squeezes the whole frame to 1024x1024 (no aspect-preserving padding),
normalises 0..1 pixels with ImageNet's statistics, and its decoder also reads two
high-resolution feature maps; masks are upscaled from 256x256 straight to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2Model, Sam2VideoModel

from .segmenter import ImageEmbedding, SamSegmenter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VideoFrame:
    """What a video model reads of one frame: its normalised pixels ``[3, S, S]`` and, where another model already
    encoded the frame (SAM 3's detector), its features in the layout transformers' video session caches."""

    pixels: torch.Tensor
    features: dict[str, list[torch.Tensor]] | None = None


def video_pixels(frame: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` to SAM 2's normalised ``[3, S, S]``, resized as Meta's video predictor reads a frame
    folder (PIL's bicubic resize of the 8-bit frame, then 0..1 and ImageNet's statistics)."""
    resized = Image.fromarray(frame.numpy()).resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels - mean) / std


class Sam2Segmenter(SamSegmenter):
    """SAM 2 or 2.1 (any Hiera size) with the same interface as SAM: embed once, decode any boxes."""

    model: Sam2Model

    def __init__(self, model: Sam2Model, name: str, video: Sam2VideoModel | None = None) -> None:
        super().__init__(model, name)
        # The video model (memory for tracking) shares the image model's weights; None for a transformers
        # image-only folder, which has no memory weights.
        self.video = video
        self._both = torch.nn.ModuleDict({"image": model, "video": video}) if video is not None else None

    def module(self) -> torch.nn.Module:
        return self._both if self._both is not None else self.model

    def video_frame(self, frame: torch.Tensor) -> VideoFrame:
        """One uint8 ``[H, W, 3]`` frame as the video model reads it (its image encoder runs inside the video pass)."""
        return VideoFrame(video_pixels(frame, int(self.video.config.image_size)))

    def preprocess(self, frame: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 ``[H, W, 3]`` to ``[1, 3, S, S]``: torchvision's antialiased bilinear resize, as Meta's transforms."""
        pixels = frame.permute(2, 0, 1).float().div(255.0).unsqueeze(0)
        size = (self.image_size, self.image_size)
        pixels = F.interpolate(pixels, size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std, size

    @torch.inference_mode()
    def _embed(self, frame: torch.Tensor) -> ImageEmbedding:
        pixels, input_size = self.preprocess(frame)
        *high_res, embeddings = self.model.get_image_embeddings(pixels.to(self.device, self.dtype))
        return ImageEmbedding(embeddings, tuple(high_res), input_size, (int(frame.shape[0]), int(frame.shape[1])))

    def model_embeddings(self, embedding: ImageEmbedding) -> list[torch.Tensor]:
        return [*embedding.intermediate, embedding.embeddings]  # SAM 2's decoder also reads two high-resolution maps

    def _decode(self, embedding: ImageEmbedding, boxes: torch.Tensor) -> torch.Tensor:
        out = self.prompt_model()(image_embeddings=self.model_embeddings(embedding), input_boxes=boxes.unsqueeze(0), multimask_output=False)
        return out.pred_masks[0, :, 0]  # [n, 256, 256] logits

    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        x = F.interpolate(low_res.unsqueeze(1).float(), embedding.original_size, mode="bilinear", align_corners=False)
        return x[:, 0] > 0.0
