"""Text prompt to labelled boxes: the original Grounding DINO pre/post-processing around transformers' model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.ops import nms
from transformers import BertTokenizer, GroundingDinoForObjectDetection

from ..caching import BackboneCache, LruCache, result_key
from ..errors import InputError
from ..placement import ModelPlacement
from ..records import Detections
from .deformable import use_gathered_deformable_attention
from .text import caption_from_prompt, tokenize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 800
MAX_SIDE = 1333
# Raw outputs (~1 MB each) kept for repeated frames (static video, re-run workflows) with the same prompt.
PREDICTION_CACHE_SIZE = 8


@dataclass(frozen=True)
class DetectionSettings:
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    nms_iou: float | None = 0.7  # None: keep overlapping boxes
    max_detections: int | None = None

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise InputError(f"{name} must be between 0 and 1, got {value!r}")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise InputError(f"nms_iou must be in (0, 1] or None, got {self.nms_iou!r}")
        if self.max_detections is not None and self.max_detections < 0:
            raise InputError(f"max_detections must be >= 0 (0 = no limit), got {self.max_detections!r}")


def resized_shape(height: int, width: int, short: int = SHORT_SIDE, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) after DETR-style resizing: short side to ``short`` unless the long side would pass ``max_side``."""
    lo, hi = min(height, width), max(height, width)
    if hi / lo * short > max_side:
        short = int(round(max_side * lo / hi))
    if lo == short:
        return height, width
    if width < height:
        return int(short * height / width), short
    return short, int(short * width / height)


def phrase_for(token_mask: torch.Tensor, input_ids: list[int], tokenizer: BertTokenizer) -> str:
    """The prompt words whose tokens scored above the text threshold for one box."""
    special = set(tokenizer.all_special_ids)
    ids = [input_ids[i] for i in token_mask.nonzero().flatten().tolist() if 0 < i < len(input_ids)]
    words = tokenizer.decode([t for t in ids if t not in special])
    return words.replace(".", "").strip()


def phrase_spans(input_ids: list[int], tokenizer: BertTokenizer) -> list[range]:
    """Token positions of each prompt phrase: the runs between [CLS], the '.' separators and [SEP]."""
    breaks = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(".")}
    spans, start = [], None
    for i, token in enumerate(input_ids):
        if token in breaks:
            if start is not None:
                spans.append(range(start, i))
            start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append(range(start, len(input_ids)))
    return spans


def best_span(probs: torch.Tensor, spans: list[range]) -> int:
    """Which prompt phrase a box belongs to: the one holding its highest-scoring token."""
    return max(range(len(spans)), key=lambda k: float(probs[list(spans[k])].max()))


def phrase_texts(input_ids: list[int], spans: list[range], tokenizer: BertTokenizer) -> list[str]:
    """Each phrase as the tokenizer reads it back: a box's label when none of its tokens clears the text threshold."""
    return [tokenizer.decode([input_ids[i] for i in span]).strip() for span in spans]


class GroundingDinoDetector(ModelPlacement):
    """A loaded Grounding DINO with its tokenizer; ``detect`` is one frame, one prompt."""

    def __init__(self, model: GroundingDinoForObjectDetection, tokenizer: BertTokenizer, name: str, image_processor=None) -> None:  # noqa: ANN001
        self.model = model.eval()
        # None: the original's resizing (PIL bilinear, short side 800); else a transformers image processor
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.backbone_cache = BackboneCache(model.model.backbone).cache
        use_gathered_deformable_attention(model)
        self.prediction_cache: LruCache[tuple[torch.Tensor, torch.Tensor]] = LruCache(PREDICTION_CACHE_SIZE)

    def caches(self) -> tuple[LruCache, ...]:
        return (self.prediction_cache, self.backbone_cache)

    def preprocess(self, frame: torch.Tensor) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` to normalised ``[1, 3, h, w]`` (PIL bilinear, as the original)."""
        if self.image_processor is not None:
            return self.image_processor(images=Image.fromarray(frame.numpy()), return_tensors="pt")["pixel_values"].float()
        height, width = frame.shape[:2]
        new_h, new_w = resized_shape(height, width)
        image = Image.fromarray(frame.numpy())
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return ((pixels - mean) / std).unsqueeze(0)

    @torch.inference_mode()
    def raw_predictions(self, pixels: torch.Tensor, text: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query: token probabilities ``[Q, 256]`` and normalised cxcywh boxes ``[Q, 4]``."""
        device = self.device
        out = self.model(
            pixel_values=pixels.to(device, self.dtype),
            input_ids=text["input_ids"].to(device),
            attention_mask=text["attention_mask"].to(device),
            token_type_ids=text["token_type_ids"].to(device),
        )
        return out.logits[0].float().sigmoid().cpu(), out.pred_boxes[0].float().cpu()

    def detect(self, frame: torch.Tensor, prompt: str, settings: DetectionSettings) -> Detections:
        caption = caption_from_prompt(prompt)
        text = tokenize(self.tokenizer, caption)
        pixels = self.preprocess(frame)
        key = result_key((pixels,), self.device, self.dtype, caption)
        probs, boxes = self.prediction_cache.get_or_compute(key, lambda: self.raw_predictions(pixels, text))
        return self.postprocess(probs, boxes, text["input_ids"][0].tolist(), (int(frame.shape[0]), int(frame.shape[1])), settings)

    def postprocess(
        self,
        probs: torch.Tensor,
        boxes: torch.Tensor,
        input_ids: list[int],
        image_size: tuple[int, int],
        settings: DetectionSettings,
    ) -> Detections:
        scores = probs.max(dim=1).values
        keep = scores > settings.box_threshold
        probs, boxes, scores = probs[keep], boxes[keep], scores[keep]
        height, width = image_size
        cx, cy, w, h = (boxes * torch.tensor([width, height, width, height])).unbind(1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        order = scores.argsort(descending=True)
        if settings.nms_iou is not None and settings.nms_iou < 1.0 and len(order):
            order = nms(xyxy, scores, settings.nms_iou)
        if settings.max_detections:
            order = order[: settings.max_detections]
        spans = phrase_spans(input_ids, self.tokenizer)
        phrase_index = [best_span(probs[i], spans) if spans else 0 for i in order.tolist()]
        phrases = phrase_texts(input_ids, spans, self.tokenizer)
        labels = tuple(
            phrase_for(probs[i] > settings.text_threshold, input_ids, self.tokenizer) or (phrases[k] if phrases else "")
            for i, k in zip(order.tolist(), phrase_index, strict=True)
        )
        return Detections(
            boxes=xyxy[order].float(),
            scores=scores[order].float(),
            labels=labels,
            frame_index=torch.zeros(len(order), dtype=torch.int64),
            image_size=image_size,
            num_frames=1,
            phrase_index=torch.tensor(phrase_index, dtype=torch.int64),
        )
