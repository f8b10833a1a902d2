"""What every output promises about a detection: a box inside the frame and a label that is never empty."""

from __future__ import annotations

import torch
from scenes import PROMPT

from grounded_sam import DetectionSettings, GroundedSam
from grounded_sam.dino.detector import best_span, phrase_spans, phrase_texts
from grounded_sam.dino.text import bert_tokenizer, caption_from_prompt, tokenize


def test_fallback_label_is_the_whole_phrase_of_the_top_token():
    tokenizer = bert_tokenizer()
    ids = tokenize(tokenizer, caption_from_prompt("the red ball . dog"))["input_ids"][0].tolist()
    spans = phrase_spans(ids, tokenizer)
    assert phrase_texts(ids, spans, tokenizer) == ["the red ball", "dog"]
    probs = torch.zeros(256)
    probs[spans[0][1]] = 0.2  # "red": below any usual text threshold, yet the best token
    probs[spans[1][0]] = 0.1
    assert best_span(probs, spans) == 0
    probs[spans[1][0]] = 0.3
    assert best_span(probs, spans) == 1


def test_pipeline_boxes_are_clipped_and_labels_never_empty(detector, segmenter, bus):
    h, w = bus.shape[:2]
    every = detector.detect(bus, PROMPT, DetectionSettings(0.0, 1.0, nms_iou=None))
    outside = (every.boxes[:, 0] < 0) | (every.boxes[:, 1] < 0) | (every.boxes[:, 2] > w) | (every.boxes[:, 3] > h)
    assert outside.any(), "the random model must place some box edge outside the frame for this check to mean anything"
    # the best-scoring box that crosses the frame's edge, and every box scoring above it
    settings = DetectionSettings(float(every.scores[outside].max()) - 1e-6, 1.0, nms_iou=None)  # text threshold 1: no token clears it
    raw = detector.detect(bus, PROMPT, settings)
    found = GroundedSam(detector, segmenter).segment(bus, PROMPT, settings)
    assert torch.equal(found.boxes[:, 0::2], raw.boxes[:, 0::2].clamp(0, w))
    assert torch.equal(found.boxes[:, 1::2], raw.boxes[:, 1::2].clamp(0, h))
    assert all(found.labels) and set(found.labels) <= {"person", "tie"}  # whole prompt phrases


def test_phrase_of_every_box_at_once_is_the_phrase_of_each():
    from grounded_sam.dino.detector import best_spans

    tokenizer = bert_tokenizer()
    ids = tokenize(tokenizer, caption_from_prompt("the red ball . dog . a cat"))["input_ids"][0].tolist()
    spans = phrase_spans(ids, tokenizer)
    probs = torch.rand((200, 256), generator=torch.Generator().manual_seed(0))
    probs[7, :] = 0.5  # a tie everywhere: the first phrase
    assert best_spans(probs, spans).tolist() == [best_span(p, spans) for p in probs]
    assert best_spans(probs, spans)[7] == 0 and set(best_spans(probs, spans).tolist()) == {0, 1, 2}
