"""Exclusion on scenes where the answer is known, and picking objects by label, score or size."""

from __future__ import annotations

import pytest
import torch

from grounded_sam import Detections, DetectionSettings, GroundedSam, InputError
from grounded_sam.exclusion import cut_out, split_excluded, with_exclusions
from grounded_sam.picking import label_matches, pick_objects


def objects(boxes, masks, labels, phrase_index, frames=None, size=(100, 100)) -> Detections:
    n = len(boxes)
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32), scores=torch.linspace(0.9, 0.5, n), labels=tuple(labels),
        frame_index=torch.tensor(frames or [0] * n), image_size=size, num_frames=1 + max(frames or [0]),
        masks=torch.stack(masks), phrase_index=torch.tensor(phrase_index),
    )  # fmt: skip


def rect(y0, y1, x0, x1, size=(100, 100)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_the_person_without_the_bag():
    """A person (20x60) holding a bag (20x20) that overlaps it; a second 'person' box that is really the bag."""
    person, bag, bag_again = rect(20, 80, 30, 50), rect(50, 70, 40, 60), rect(50, 70, 40, 60)
    found = objects(
        [[30, 20, 50, 80], [40, 50, 60, 70], [40, 50, 60, 70.5]], [person, bag_again, bag], ["person", "person", "bag"], [0, 0, 1]
    )
    kept, excluded = split_excluded(found, kept_phrases=1)
    assert kept.labels == ("person", "person") and excluded.labels == ("bag",)
    result = cut_out(kept, excluded)
    assert len(result) == 1  # the 'person' whose box is the bag's box is the bag: dropped
    assert torch.equal(result.masks[0], person & ~bag)
    assert result.masks[0].sum() == 20 * 60 - 10 * 20


def test_exclusion_prompt_and_mistakes():
    assert with_exclusions("The Person . dog", "bag . shadow.") == ("the person . dog . bag . shadow", 2)
    with pytest.raises(InputError, match="both in the prompt and in exclude"):
        with_exclusions("dog . bag", "Bag")


def test_pipeline_exclusion_in_one_pass(detector, segmenter, zidane):
    """Through the real models (random weights): excluded phrases are detected with the others and cut out."""
    every = detector.detect(zidane, "man . shirt", DetectionSettings(0.0, 0.2, nms_iou=None))
    best = [float(every.scores[every.phrase_index == k].max()) for k in (0, 1)]  # each phrase's best box
    threshold = min(best) - 0.01  # so that both phrases own boxes
    settings = DetectionSettings(threshold, 0.2)
    pipeline = GroundedSam(detector, segmenter)
    both = detector.detect(zidane, "man . shirt", settings)
    assert set(both.phrase_index.tolist()) == {0, 1}, "both phrases must own boxes for the check to mean anything"
    detector.clear_caches()  # so that the pass below really runs the model
    calls = []
    handle = detector.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = pipeline.segment(zidane, "man", settings, exclude="shirt")
    finally:
        handle.remove()
    assert len(calls) == 1  # one detection pass for the kept and the excluded phrases
    everything = pipeline.segment(zidane, "man . shirt", DetectionSettings(threshold, 0.2, max_detections=None))
    kept, excluded = split_excluded(everything, 1)
    removed = excluded.masks.any(0)
    assert len(excluded) > 0 and len(result) > 0
    assert not (result.masks & removed).any()  # no kept pixel is an excluded object's pixel
    expected = cut_out(kept, excluded)  # the same, from a run that kept every phrase and cut afterwards
    assert result.labels == expected.labels and torch.equal(result.boxes, expected.boxes)
    assert torch.equal(result.masks, expected.masks)
    assert torch.equal(result.merged_masks()[0], expected.merged_masks()[0])
    assert set(result.phrase_index.tolist()) == {0}
    capped = pipeline.segment(zidane, "man", DetectionSettings(threshold, 0.2, max_detections=2), exclude="shirt")
    assert len(capped) <= 2


def test_picking_by_label_score_and_area():
    big, small, mid = rect(0, 50, 0, 50), rect(0, 5, 0, 5), rect(0, 20, 0, 20)
    found = objects(
        [[0, 0, 50, 50], [0, 0, 5, 5], [0, 0, 20, 20], [0, 0, 20, 20]], [big, small, mid, mid],
        ["dog", "red ball", "ball", "dog"], [0, 1, 1, 0], frames=[0, 0, 0, 1],
    )  # fmt: skip
    assert pick_objects(found, label="ball").labels == ("red ball", "ball")
    assert pick_objects(found, label="red ball . dog").labels == ("dog", "red ball", "dog")
    assert pick_objects(found, top_k=1).labels == ("dog", "dog")  # the best per frame
    largest = pick_objects(found, top_k=1, rank_by="area", label="ball")
    assert largest.labels == ("ball",) and int(largest.masks[0].sum()) == 400
    assert label_matches("Ball", "red ball") and not label_matches("blue ball", "red ball")
    with pytest.raises(InputError, match="rank_by"):
        pick_objects(found, rank_by="size")
