"""Text prompt to labelled boxes: the original Grounding DINO pre/post-processing around transformers' model."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import BertTokenizer, GroundingDinoForObjectDetection

from ..prompts import Prompt
from ..records import Detections
from ..runtime.caching import BackboneCache, LruCache, result_key
from ..runtime.placement import ModelPlacement
from ..selection.boxes import select_boxes
from ..settings import DetectionSettings
from .deformable import use_gathered_deformable_attention
from .feed_forward import use_blocked_feed_forward
from .fusion import use_folded_fusion_attention
from .text import caption_from_prompt, tokenize

__all__ = ["DetectionSettings", "GroundingDinoDetector"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 800
MAX_SIDE = 1333
# Raw outputs (~1 MB each) kept for repeated frames (static video, re-run workflows) with the same prompt.
PREDICTION_CACHE_SIZE = 8


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


def best_spans(probs: torch.Tensor, spans: list[range]) -> torch.Tensor:
    """``best_span`` for every row of ``probs`` ``[N, tokens]`` at once (the first phrase wins a tie, as there)."""
    if not spans:
        return torch.zeros(len(probs), dtype=torch.int64)
    per_phrase = torch.stack([probs[:, span.start : span.stop].max(dim=1).values for span in spans], dim=1)
    return per_phrase.argmax(dim=1)


def words_in(spans: tuple[range, ...] | list[range], token_mask: torch.Tensor) -> torch.Tensor:
    """``token_mask`` with every position outside ``spans`` cleared: a label takes words from these phrases only."""
    inside = torch.zeros_like(token_mask)
    for span in spans:
        inside[span.start : span.stop] = True
    return token_mask & inside


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
        use_folded_fusion_attention(model)
        use_blocked_feed_forward(model)
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

    def predictions(self, frame: torch.Tensor, caption: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(token probabilities ``[Q, 256]``, normalised cxcywh boxes ``[Q, 4]``, the tokenized caption) for one
        uint8 ``[H, W, 3]`` frame; reused when the same frame and caption come again."""
        text = tokenize(self.tokenizer, caption)
        pixels = self.preprocess(frame)
        key = result_key((pixels,), self.device, self.dtype, caption)
        probs, boxes = self.prediction_cache.get_or_compute(key, lambda: self.raw_predictions(pixels, text))
        return probs, boxes, text

    def detect(self, frame: torch.Tensor, prompt: str | Prompt, settings: DetectionSettings) -> Detections:
        """The objects ``prompt`` names in one frame, best first; with exclusions (a ``Prompt`` with ``excluded``
        phrases), the kept phrases' objects come first, then the excluded phrases' (see ``box_selection``)."""
        prompt = Prompt.parse(prompt)
        probs, boxes, text = self.predictions(frame, caption_from_prompt(prompt.text))
        image_size = (int(frame.shape[0]), int(frame.shape[1]))
        return self.postprocess(probs, boxes, text["input_ids"][0].tolist(), image_size, settings, len(prompt.kept))

    def postprocess(
        self,
        probs: torch.Tensor,
        boxes: torch.Tensor,
        input_ids: list[int],
        image_size: tuple[int, int],
        settings: DetectionSettings,
        kept_phrases: int | None = None,
    ) -> Detections:
        """Thresholds, the phrase and label of each box, and ``box_selection``'s choice of boxes.

        ``kept_phrases``: the prompt's first phrases are to be found, the rest to be left out (None: all are kept).
        A box's label is made of the words of its own group of phrases only.
        """
        scores = probs.max(dim=1).values
        keep = scores > settings.box_threshold
        probs, boxes, scores = probs[keep], boxes[keep], scores[keep]
        height, width = image_size
        cx, cy, w, h = (boxes * torch.tensor([width, height, width, height])).unbind(1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        spans = phrase_spans(input_ids, self.tokenizer)
        kept_spans = len(spans) if kept_phrases is None else min(kept_phrases, len(spans))
        phrase_index = best_spans(probs, spans)
        kept_rows, excluded_rows = select_boxes(xyxy, scores, phrase_index >= kept_spans, settings)
        order = torch.cat([kept_rows, excluded_rows])
        phrases = phrase_texts(input_ids, spans, self.tokenizer)
        groups = (spans[:kept_spans], spans[kept_spans:])
        labels = tuple(
            phrase_for(words_in(groups[int(k >= kept_spans)], probs[i] > settings.text_threshold), input_ids, self.tokenizer)
            or (phrases[k] if phrases else "")
            for i, k in zip(order.tolist(), phrase_index[order].tolist(), strict=True)
        )
        return Detections(
            boxes=xyxy[order].float(),
            scores=scores[order].float(),
            labels=labels,
            frame_index=torch.zeros(len(order), dtype=torch.int64),
            image_size=image_size,
            num_frames=1,
            phrase_index=phrase_index[order],
        )
