"""A second prompt on the same image reuses the image work, and gives what a fresh run gives."""

from __future__ import annotations

import pytest
import torch

from grounded_sam import DetectionSettings, GroundedSam, InputError, load_grounding_dino, load_sam


def settings_for(detector, frame, prompt) -> DetectionSettings:
    """Thresholds that keep a handful of boxes, whatever the random weights find for this prompt."""
    found = detector.detect(frame, prompt, DetectionSettings(0.0, 0.0, nms_iou=None, max_detections=1))
    threshold = float(found.scores[0]) - 0.02
    return DetectionSettings(threshold, threshold - 0.02)


def test_second_prompt_reuses_image_work_and_matches_a_fresh_run(dino_checkpoint, sam_checkpoint, zidane):
    warm = GroundedSam(load_grounding_dino(dino_checkpoint), load_sam(sam_checkpoint))
    caches = (warm.detector.prediction_cache, warm.detector.backbone_cache, warm.segmenter.embedding_cache)

    def counts():
        return [(c.misses, c.hits) for c in caches]

    first = settings_for(warm.detector, zidane, "person")
    warm.segment(zidane, "person", first)  # same image and prompt: the raw predictions are reused
    assert counts() == [(1, 1), (1, 0), (1, 0)]
    second = settings_for(warm.detector, zidane, "tie . shirt")  # new prompt: only the backbone is reused
    cached = warm.segment(zidane, "tie . shirt", second)
    assert counts() == [(2, 2), (1, 1), (1, 1)]

    fresh = GroundedSam(load_grounding_dino(dino_checkpoint), load_sam(sam_checkpoint)).segment(zidane, "tie . shirt", second)
    assert len(cached) == len(fresh) > 0
    assert torch.equal(cached.boxes, fresh.boxes) and torch.equal(cached.masks, fresh.masks)
    assert cached.labels == fresh.labels


def test_cache_misses_on_a_changed_image_or_dtype(segmenter, bus):
    cache = segmenter.embedding_cache
    cache.clear()
    before = cache.misses
    segmenter.embed(bus)
    changed = bus.clone()
    changed[0, 0, 0] ^= 1  # one bit of one pixel
    segmenter.embed(changed)
    assert cache.misses == before + 2
    segmenter.to(dtype=torch.float64)
    try:
        embedding = segmenter.embed(bus)
        assert cache.misses == before + 3 and embedding.embeddings.dtype == torch.float64
    finally:
        segmenter.to(dtype=torch.float32)
    assert len(cache) <= 4


def test_bf16_masks_stay_close_to_fp32(detector, segmenter, bus, bf16_on_this_cpu):
    frame = bus[:512, :512]
    settings = settings_for(detector, frame, "person")
    exact = GroundedSam(detector, segmenter).segment(frame, "person", settings)
    assert len(exact) > 0
    fast = GroundedSam(detector, segmenter, "bf16")
    assert fast.effective_precision() == "bf16"
    with fast._autocast():
        masks = segmenter.masks_for_boxes(segmenter.embed(frame), exact.boxes)
    overlap = (masks & exact.masks).sum().item() / max(1, (masks | exact.masks).sum().item())
    assert overlap > 0.9  # random weights amplify rounding; the benchmark measures real-weight IoU


def test_unknown_precision_is_refused(detector, segmenter):
    with pytest.raises(InputError, match="precision"):
        GroundedSam(detector, segmenter, "fp8")
