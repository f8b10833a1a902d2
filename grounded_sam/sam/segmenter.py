"""Boxes in, masks out: SAM with Meta's pre- and post-processing around transformers' model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SamHQModel, SamModel

from ..clicks import Clicks
from ..errors import InputError
from ..runtime.caching import LruCache, result_key
from ..runtime.placement import ModelPlacement
from .box_decoder import decode_boxes
from .hq_decoder import hq_low_res_masks
from .tiny_vit import TinyViTEncoder
from .vit_attention import use_banded_attention

# Meta's SAM normalises 0..255 pixels with these.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# Boxes decoded per mask-decoder call, and the float32 budget of one full-resolution upsampling.
BOX_CHUNK = 16
# Image embeddings kept for reuse: ~4 MB each (ViT), ~25 MB with HQ-SAM's early features.
EMBEDDING_CACHE_SIZE = 4
UPSCALE_BYTES = 256 << 20


@dataclass(frozen=True)
class ImageEmbedding:
    """What SAM's encoder made of one frame; reusable for any number of prompts."""

    embeddings: torch.Tensor  # [1, 256, 64, 64]
    intermediate: tuple[torch.Tensor, ...]  # HQ-SAM's early ViT features, empty otherwise
    input_size: tuple[int, int]  # (h, w) after resizing the long side to the encoder size
    original_size: tuple[int, int]  # (H, W) of the frame


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamSegmenter(ModelPlacement):
    """One SAM variant (ViT SAM, HQ-SAM or MobileSAM) ready to segment boxes."""

    def __init__(self, model: SamModel | SamHQModel, name: str) -> None:
        self.model = model.eval()
        self.name = name
        self.is_hq = isinstance(model, SamHQModel)
        self.image_size = int(model.config.prompt_encoder_config.image_size)
        self.hq_token_only = False  # HQ-SAM's own predictor default: SAM and HQ logits summed
        self.embedding_cache: LruCache[ImageEmbedding] = LruCache(EMBEDDING_CACHE_SIZE)
        use_banded_attention(model.vision_encoder)

    def caches(self) -> tuple[LruCache, ...]:
        return (self.embedding_cache,)

    def encoder_module(self) -> torch.nn.Module:
        return self.model.vision_encoder

    def preprocess(self, frame: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 ``[H, W, 3]`` to the normalised, padded ``[1, 3, S, S]`` the encoder takes."""
        h, w = frame.shape[:2]
        new_h, new_w = resized_shape(h, w, self.image_size)
        resized = Image.fromarray(frame.numpy()).resize((new_w, new_h), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float()
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        pixels = (pixels - mean) / std
        pixels = F.pad(pixels, (0, self.image_size - new_w, 0, self.image_size - new_h))
        return pixels.unsqueeze(0), (new_h, new_w)

    def embed(self, frame: torch.Tensor) -> ImageEmbedding:
        """The frame's image embedding, reused when the same frame comes again (a second prompt)."""
        key = result_key((frame,), self.device, self.dtype)
        return self.embedding_cache.get_or_compute(key, lambda: self._embed(frame))

    @torch.inference_mode()
    def _embed(self, frame: torch.Tensor) -> ImageEmbedding:
        pixels, input_size = self.preprocess(frame)
        pixels = pixels.to(self.device, self.dtype)
        encoder = self.model.vision_encoder
        if isinstance(encoder, TinyViTEncoder):
            embeddings, intermediate = encoder(pixels), ()
        else:
            out = encoder(pixels)
            embeddings = out.last_hidden_state
            intermediate = tuple(getattr(out, "intermediate_embeddings", None) or ())
        return ImageEmbedding(embeddings, intermediate, input_size, (int(frame.shape[0]), int(frame.shape[1])))

    @torch.inference_mode()
    def masks_for_boxes(
        self, embedding: ImageEmbedding, boxes: torch.Tensor, on_chunk: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """bool ``[N, H, W]`` masks for pixel xyxy ``boxes`` ``[N, 4]`` in the original frame.

        ``on_chunk(boxes done, boxes)`` runs twice a chunk (decoded, upscaled): a host's progress bar and stop button.
        """
        height, width = embedding.original_size
        if boxes.shape[0] == 0:
            return torch.zeros((0, height, width), dtype=torch.bool)
        new_h, new_w = embedding.input_size
        scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        prompt_boxes = (boxes.float().cpu() * scale).to(self.device, self.dtype)
        per_box = 4 * height * width  # one float32 full-resolution logit map
        chunk_size = max(1, min(BOX_CHUNK, UPSCALE_BYTES // per_box))
        masks: list[torch.Tensor] = []
        done = 0
        for chunk in prompt_boxes.split(chunk_size):
            low_res = self._decode(embedding, chunk)
            if on_chunk is not None:  # also between decoding and upscaling: both take long on big frames
                on_chunk(done, boxes.shape[0])
            masks.append(self._upscale(low_res, embedding).cpu())
            done += chunk.shape[0]
            if on_chunk is not None:
                on_chunk(done, boxes.shape[0])
        return torch.cat(masks)

    def _decode(self, embedding: ImageEmbedding, boxes: torch.Tensor) -> torch.Tensor:
        if self.is_hq:
            return hq_low_res_masks(self.model, embedding.embeddings, embedding.intermediate, boxes, self.hq_token_only)[0]
        return decode_boxes(self.model, embedding.embeddings, boxes)  # [n, 256, 256] logits

    @torch.inference_mode()
    def masks_for_clicks(
        self,
        embedding: ImageEmbedding,
        clicks: list[Clicks],
        boxes: torch.Tensor | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """bool ``[N, H, W]`` masks and SAM's predicted IoU ``[N]`` for ``N`` objects, each given by its clicks
        (``clicks[i]``, pixels of the original frame) and, with ``boxes`` (``[N, 4]``), its box.

        An object of one click and no box takes the best of SAM's three masks by predicted IoU (one
        click is ambiguous: a part or the whole), as Meta's ``predict(multimask_output=True)`` offers;
        every other object takes SAM's single mask. Objects are decoded in groups of equal click counts,
        each exactly as Meta's predictor decodes it alone (no padding clicks).
        """
        height, width = embedding.original_size
        count = len(clicks)
        if boxes is None and any(len(c) == 0 for c in clicks):
            raise InputError("an object needs a click or a box: give at least one point")
        masks = torch.zeros((count, height, width), dtype=torch.bool)
        scores = torch.zeros(count)
        new_h, new_w = embedding.input_size
        to_input = torch.tensor([new_w / width, new_h / height])
        sizes = torch.tensor([len(c) for c in clicks], dtype=torch.int64)
        done = 0
        for size in sizes.unique().tolist():
            for rows in (sizes == size).nonzero().flatten().split(BOX_CHUNK):
                points = labels = chunk_boxes = None
                if size:
                    points = (torch.stack([clicks[i].coords for i in rows]) * to_input).to(self.device, self.dtype)
                    labels = torch.stack([clicks[i].labels() for i in rows]).to(self.device)
                if boxes is not None:
                    chunk_boxes = (boxes[rows].float() * to_input.repeat(2)).to(self.device, self.dtype)
                low_res, iou = self._decode_prompted(embedding, points, labels, chunk_boxes, multimask=size == 1 and boxes is None)
                masks[rows] = self._upscale(low_res, embedding).cpu()
                scores[rows] = iou.float().cpu()
                done += len(rows)
                if on_chunk is not None:
                    on_chunk(done, count)
        return masks, scores

    def _decode_prompted(
        self, embedding: ImageEmbedding, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, h, w]`` low-resolution logits and predicted IoU ``[n]`` for ``n`` prompts (encoder-frame pixels)."""
        if self.is_hq:
            return hq_low_res_masks(
                self.model, embedding.embeddings, embedding.intermediate, boxes, self.hq_token_only, points, labels, multimask
            )
        return best_mask(self._prompted_model_output(embedding, points, labels, boxes, multimask))

    def prompt_model(self) -> torch.nn.Module:
        """The network that turns prompts into masks on an embedding."""
        return self.model

    def model_embeddings(self, embedding: ImageEmbedding) -> torch.Tensor | list[torch.Tensor]:
        """The embedding as ``prompt_model`` takes it."""
        return embedding.embeddings

    def _prompted_model_output(self, embedding, points, labels, boxes, multimask: bool):
        return self.prompt_model()(
            image_embeddings=self.model_embeddings(embedding),
            input_points=None if points is None else points[None],
            input_labels=None if labels is None else labels[None],
            input_boxes=None if boxes is None else boxes[None],
            multimask_output=multimask,
        )

    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        new_h, new_w = embedding.input_size
        size = self.image_size
        x = F.interpolate(low_res.unsqueeze(1).float(), (size, size), mode="bilinear", align_corners=False)
        x = F.interpolate(x[..., :new_h, :new_w], embedding.original_size, mode="bilinear", align_corners=False)
        return x[:, 0] > 0.0


def best_mask(output) -> tuple[torch.Tensor, torch.Tensor]:
    """A SAM-family model output's best mask per prompt by predicted IoU: logits ``[n, h, w]`` and IoU ``[n]``."""
    masks, scores = output.pred_masks[0], output.iou_scores[0]  # [n, k, h, w], [n, k]
    best = scores.argmax(dim=1)
    rows = torch.arange(masks.shape[0])
    return masks[rows, best], scores[rows, best]
