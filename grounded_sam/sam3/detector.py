"""Text prompt to labelled instances with masks in one model: SAM 3's image path around transformers' ``Sam3Model``.

Steps as Meta's ``Sam3Processor``: the frame squeezed to 1008x1008 (torchvision's antialiased
resize of the uint8 image), pixels to [-1, 1]; each prompt phrase is its own query, scored as
``sigmoid(logit) * sigmoid(presence)``; masks are the query's mask logits upscaled to the frame.
The image features are computed once per frame and reused for every phrase and every later prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from transformers import PreTrainedTokenizerBase, Sam3Model, Sam3TrackerModel, Sam3TrackerVideoModel

from ..prompts import Prompt
from ..records import Detections
from ..runtime.caching import LruCache, result_key
from ..runtime.placement import ModelPlacement
from ..selection.boxes import select_boxes
from ..settings import DetectionSettings

# Vision features of recent frames (~150 MB each at 1008x1008: four FPN levels of 256 channels).
VISION_CACHE_SIZE = 2
# Every query's score, box and mask logits for recent (frame, phrase) pairs (~66 MB each: 200 masks of 288x288),
# for a repeated frame and prompt (another threshold, a re-run workflow, a static video).
PREDICTION_CACHE_SIZE = 4
# Masks upscaled to the frame per call: bounds the float32 memory of big frames.
MASK_CHUNK = 16
# transformers' label for a box slot that is padding, not a prompt
PADDING_BOX_LABEL = -10


class Sam3Detector(ModelPlacement):
    """SAM 3 as the text stage: ``detect`` gives boxes, scores, labels and masks for one frame and prompt."""

    def __init__(
        self,
        model: Sam3Model,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        box_head: Sam3TrackerModel | None = None,
        video: Sam3TrackerVideoModel | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        # the tracker's box-to-mask head (no ViT of its own), for boxes from another detector
        self.box_head = box_head
        # the tracker's video memory around that head (sharing its tensors), for tracking through a clip
        self.video = video
        parts = [m for m in (model, box_head, video) if m is not None]
        self._both = torch.nn.ModuleList(parts) if len(parts) > 1 else model
        self.image_size = int(model.config.vision_config.backbone_config.image_size)
        self.vision_cache: LruCache = LruCache(VISION_CACHE_SIZE)
        self.text_cache: LruCache = LruCache(64)
        self.prediction_cache: LruCache = LruCache(PREDICTION_CACHE_SIZE)

    def module(self) -> torch.nn.Module:
        return self._both

    def caches(self) -> tuple[LruCache, ...]:
        return (self.vision_cache, self.text_cache, self.prediction_cache)

    def preprocess(self, frame: torch.Tensor) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` to ``[1, 3, S, S]`` in [-1, 1], resized as Meta's transforms resize."""
        pixels = TF.resize(frame.permute(2, 0, 1), [self.image_size, self.image_size], antialias=True)
        return (pixels.float() / 255.0 - 0.5).div_(0.5).unsqueeze(0)

    def vision_features(self, frame: torch.Tensor):  # noqa: ANN201 - transformers' Sam3VisionEncoderOutput
        """The frame's image features, reused when the same frame comes again (another prompt)."""
        key = result_key((frame,), self.device, self.dtype)
        return self.vision_cache.get_or_compute(key, lambda: self._vision_features(frame))

    @torch.inference_mode()
    def _vision_features(self, frame: torch.Tensor):  # noqa: ANN202
        return self.model.get_vision_features(pixel_values=self.preprocess(frame).to(self.device, self.dtype))

    @torch.inference_mode()
    def _text_features(self, phrase: str):  # noqa: ANN202
        tokens = self.tokenizer([phrase], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt")
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        return self.model.get_text_features(input_ids=ids, attention_mask=mask), mask

    def text_features(self, phrase: str):  # noqa: ANN201 - (transformers' text output, attention mask)
        """One phrase's text features, kept for later frames with the same prompt."""
        key = result_key((), self.device, self.dtype, phrase)
        return self.text_cache.get_or_compute(key, lambda: self._text_features(phrase))

    def raw_predictions(self, frame: torch.Tensor, phrase: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For every query: score ``[Q]``, normalised xyxy box ``[Q, 4]`` and low-resolution mask logits ``[Q, h, w]``;
        reused when the same frame and phrase come again."""
        key = result_key((frame,), self.device, self.dtype, phrase)
        return self.prediction_cache.get_or_compute(key, lambda: self._raw_predictions(frame, phrase))

    @torch.inference_mode()
    def _raw_predictions(self, frame: torch.Tensor, phrase: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        text, mask = self.text_features(phrase)
        # Meta's model always appends the box-prompt encoder's summary token, also with no box; transformers'
        # adds it only when boxes are given, so one padding box (label -10, masked everywhere) is passed.
        no_box = torch.zeros((1, 1, 4), device=self.device, dtype=self.dtype)
        no_label = torch.full((1, 1), PADDING_BOX_LABEL, device=self.device, dtype=torch.long)
        out = self.model(
            vision_embeds=self.vision_features(frame), text_embeds=text, attention_mask=mask, input_boxes=no_box, input_boxes_labels=no_label
        )
        scores = out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()
        return scores.cpu(), out.pred_boxes[0].float().cpu(), out.pred_masks[0].float()

    def detect(
        self,
        frame: torch.Tensor,
        prompt: str | Prompt,
        settings: DetectionSettings,
        on_phrase: Callable[[int, int], None] | None = None,
    ) -> Detections:
        """Every phrase of ``prompt`` ("dog . red ball") found in the uint8 ``[H, W, 3]`` frame, with its mask.

        ``box_threshold`` applies to SAM 3's instance score; ``text_threshold`` has no meaning here
        (a phrase is one query, its label is the phrase). With exclusions, the kept phrases' instances
        come first, then the excluded phrases' (see ``box_selection``). ``on_phrase(done, phrases)`` reports progress.
        """
        prompt = Prompt.parse(prompt)  # the same prompt rules as Grounding DINO
        phrases = prompt.phrases
        image_size = (int(frame.shape[0]), int(frame.shape[1]))
        found_scores, found_boxes, found_masks, found_phrase = [], [], [], []
        for index, phrase in enumerate(phrases):
            scores, boxes, mask_logits = self.raw_predictions(frame, phrase)
            keep = (scores > settings.box_threshold).nonzero().flatten()
            found_scores.append(scores[keep])
            found_boxes.append(boxes[keep])
            found_masks.append(mask_logits[keep.to(mask_logits.device)])
            found_phrase.append(torch.full((len(keep),), index, dtype=torch.int64))
            if on_phrase is not None:
                on_phrase(index + 1, len(phrases))
        scores, phrase_index = torch.cat(found_scores), torch.cat(found_phrase)
        height, width = image_size
        boxes = torch.cat(found_boxes) * torch.tensor([width, height, width, height], dtype=torch.float32)
        kept, excluded = select_boxes(boxes, scores, phrase_index >= len(prompt.kept), settings)  # across phrases, as for Grounding DINO
        order = torch.cat([kept, excluded])
        mask_logits = torch.cat(found_masks)[order.to(found_masks[0].device)]
        return Detections(
            boxes=boxes[order],
            scores=scores[order],
            labels=tuple(phrases[i] for i in phrase_index[order].tolist()),
            frame_index=torch.zeros(len(order), dtype=torch.int64),
            image_size=image_size,
            num_frames=1,
            masks=upscale_masks(mask_logits, image_size),
            phrase_index=phrase_index[order],
        )


def upscale_masks(mask_logits: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """bool ``[N, H, W]``: logits bilinearly upscaled to the frame, positive where the mask is."""
    if mask_logits.shape[0] == 0:
        return torch.zeros((0, *image_size), dtype=torch.bool)
    parts = [
        F.interpolate(chunk.unsqueeze(1).float(), image_size, mode="bilinear", align_corners=False)[:, 0].gt(0.0).cpu()
        for chunk in mask_logits.split(MASK_CHUNK)
    ]
    return torch.cat(parts)
