"""Exclusion on scenes where the answer is known, and picking objects by label, score or size."""

from __future__ import annotations

import pytest
import torch

from grounded_sam import Detections, DetectionSettings, GroundedSam, InputError
from grounded_sam.dino.text import caption_from_prompt, tokenize
from grounded_sam.prompts import Prompt
from grounded_sam.runtime.caching import result_key
from grounded_sam.selection import exclusion
from grounded_sam.selection.boxes import SAME_OBJECT_IOU, select_boxes
from grounded_sam.selection.exclusion import can_cut, cut_decoding_as_needed, cut_out, inside_boxes, split_excluded
from grounded_sam.selection.picking import label_matches, pick_objects


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
    person, bag = rect(20, 80, 30, 50), rect(50, 70, 40, 60)
    boxes = torch.tensor([[30, 20, 50, 80], [40, 50, 60, 70], [40, 50, 60, 70.5]], dtype=torch.float32)
    kept, left_out = select_boxes(boxes, torch.tensor([0.9, 0.7, 0.5]), torch.tensor([False, False, True]), DetectionSettings(nms_iou=0.7))
    assert kept.tolist() == [0] and left_out.tolist() == [2]  # the 'person' whose box is the bag's box is the bag: dropped
    found = objects([[30, 20, 50, 80], [40, 50, 60, 70.5]], [person, bag], ["person", "bag"], [0, 1])
    kept_objects, excluded = split_excluded(found, Prompt(("person",), ("bag",)))
    assert kept_objects.labels == ("person",) and excluded.labels == ("bag",)
    result = cut_out(kept_objects, excluded)
    assert torch.equal(result.masks[0], person & ~bag)
    assert result.masks[0].sum() == 20 * 60 - 10 * 20


def test_an_excluded_mask_cuts_only_inside_its_own_box():
    """SAM's mask for a box may spill past it: the spill does not cut, and a box over no kept pixel cannot cut at all."""
    person = rect(0, 100, 0, 50)
    spill = rect(0, 100, 30, 100)  # the excluded object's mask runs into the person far outside its box
    found = objects([[0, 0, 50, 100], [60, 40, 100, 60]], [person, spill], ["person", "bag"], [0, 1])
    kept, excluded = split_excluded(found, Prompt(("person",), ("bag",)))
    assert not can_cut(excluded.boxes, kept.masks.any(0)).any()  # its box [60, 100) holds no person pixel
    assert torch.equal(cut_out(kept, excluded).masks[0], person)
    inside = inside_boxes(torch.tensor([[0.5, 1.2, 3.0, 2.0]]), (4, 5))[0]  # pixels x 0..2, y 1
    assert inside.nonzero().tolist() == [[1, 0], [1, 1], [1, 2]]


@pytest.mark.parametrize("group", [1, 2, 8])
def test_an_excluded_mask_whose_cut_is_made_already_is_not_decoded(monkeypatch, group):
    """Excluded masks are made a group at a time, each only while its box still holds a kept pixel no cut has
    removed; the result is ``cut_out``'s with every mask made."""
    monkeypatch.setattr(exclusion, "CUT_GROUP", group)
    person = rect(0, 100, 0, 60)
    coat, sleeve, bag, far = rect(0, 100, 20, 60), rect(40, 60, 30, 50), rect(10, 30, 0, 25), rect(0, 20, 80, 100)
    kept = objects([[0, 0, 60, 100]], [person], ["person"], [0])
    # the coat's cut covers the sleeve's box; the bag cuts elsewhere; the far box holds no person pixel
    excluded = objects([[20, 0, 60, 100], [30, 40, 50, 60], [0, 10, 25, 30], [80, 0, 100, 20]], [coat, sleeve, bag, far],
                       ["coat", "sleeve", "bag", "far"], [1, 1, 1, 1])  # fmt: skip
    asked: list[str] = []

    def decode(part: Detections, done: int) -> torch.Tensor:
        assert done == len(asked)
        asked.extend(part.labels)
        return part.masks

    result = cut_decoding_as_needed(kept, excluded, decode)
    every_cut = torch.stack([m & inside_boxes(b[None], (100, 100))[0] for m, b in zip(excluded.masks, excluded.boxes, strict=True)])
    assert torch.equal(result.masks[0], person & ~every_cut.any(0))  # what every mask made cuts
    assert result.masks[0].sum() == 20 * 100 - 20 * 20  # the coat took 40 of its 60 columns, the bag a 20x20 corner
    # one at a time: the sleeve is skipped once the coat is cut; in one group the sleeve is made with the coat
    assert asked == {1: ["coat", "bag"], 2: ["coat", "sleeve", "bag"], 8: ["coat", "sleeve", "bag"]}[group]


def test_exclusion_prompt_and_mistakes():
    prompt = Prompt.parse("The Person . dog", "bag . shadow.")
    assert prompt == Prompt(("the person", "dog"), ("bag", "shadow")) and prompt.text == "the person . dog . bag . shadow"
    with pytest.raises(InputError, match="both in the prompt and in exclude"):
        Prompt.parse("dog . bag", "Bag")
    with pytest.raises(InputError, match="prompt is empty"):
        Prompt.parse(" . ", "bag")


def bag_scored_as_person(detector, image_size: tuple[int, int]):
    """Raw outputs of a scene for "person . bag": one bag that scores higher as "person" than as "bag" (A, and B on the
    same bag), and a person (D) that overlaps the bag's box by IoU 0.81 (less than ``SAME_OBJECT_IOU``) and A's by 0.83
    (more than the suppression's 0.7).

    Returns (token probabilities, normalised cxcywh boxes, input ids).
    """
    text = tokenize(detector.tokenizer, caption_from_prompt("person . bag"))
    ids = text["input_ids"][0].tolist()
    person, bag = ids.index(detector.tokenizer.convert_tokens_to_ids("person")), ids.index(detector.tokenizer.convert_tokens_to_ids("bag"))
    h, w = image_size
    pixel_boxes = torch.tensor([
        [200.0, 200.0, 300.0, 300.0],  # A: the bag, as "person" 0.8 (and "bag" 0.5)
        [201.0, 200.0, 300.0, 301.0],  # B: the bag, as "bag" 0.6 (and "person" 0.3): IoU with A 0.98
        [190.0, 190.0, 300.0, 300.0],  # D: a person, "person" 0.65 (and "bag" 0.4): IoU with B 0.82
    ])  # fmt: skip
    probs = torch.zeros((3, 256))
    probs[0, person], probs[0, bag] = 0.8, 0.5
    probs[1, person], probs[1, bag] = 0.3, 0.6
    probs[2, person], probs[2, bag] = 0.65, 0.4
    x0, y0, x1, y1 = pixel_boxes.unbind(1)
    cxcywh = torch.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], dim=1)
    return probs, cxcywh, ids


def test_bag_scored_as_person_is_left_out_by_the_documented_rule(detector):
    """Suppression within the excluded phrases, the same-object rule, suppression within the kept phrases; labels of
    kept objects come from the kept phrases only. (One suppression over both used to remove the bag's "bag" box and the
    person, and report the bag as a "person bag"; A, dropped as the bag, must not suppress D either.)"""
    probs, boxes, ids = bag_scored_as_person(detector, (480, 640))
    settings = DetectionSettings(box_threshold=0.25, text_threshold=0.25, nms_iou=0.7)
    found = detector.postprocess(probs, boxes, ids, (480, 640), settings, kept_phrases=1)
    kept, excluded = split_excluded(found, Prompt(("person",), ("bag",)))
    assert kept.labels == ("person",) and torch.allclose(kept.scores, torch.tensor([0.65]))  # D only: A is the bag
    assert excluded.labels == ("bag",) and torch.allclose(excluded.scores, torch.tensor([0.6]))  # B survives
    assert SAME_OBJECT_IOU > 0.82 > settings.nms_iou  # D's overlap with B (0.81) and A (0.83): kept, to be cut
    everything = detector.postprocess(probs, boxes, ids, (480, 640), settings)  # without exclusion: one group
    assert everything.labels[0] == "person bag"  # words of every phrase, as the original detector labels


def test_bag_scored_as_person_through_the_pipeline(detector, segmenter, bus):
    """The same scene through the whole pipeline (real SAM masks): the bag is no person, and the person loses the
    bag's pixels inside the bag's box."""
    frame = bus[:480, :640].contiguous()
    probs, boxes, _ = bag_scored_as_person(detector, (480, 640))
    caption = caption_from_prompt("person . bag")
    key = result_key((detector.preprocess(frame),), detector.device, detector.dtype, caption)
    detector.clear_caches()
    detector.prediction_cache.get_or_compute(key, lambda: (probs, boxes))  # the scene stands in for the model's outputs
    settings = DetectionSettings(box_threshold=0.25, text_threshold=0.25, nms_iou=0.7)
    result = GroundedSam(detector, segmenter, "fp32").segment(frame, "person", settings, exclude="bag")
    assert result.labels == ("person",) and torch.allclose(result.boxes[0], torch.tensor([190.0, 190.0, 300.0, 300.0]), atol=1e-3)
    embedding = segmenter.embed(frame)
    bag_box = torch.tensor([[201.0, 200.0, 300.0, 301.0]])
    person_mask, bag_mask = segmenter.masks_for_boxes(embedding, torch.tensor([[190.0, 190.0, 300.0, 300.0]]))[0], segmenter.masks_for_boxes(embedding, bag_box)[0]
    removed = bag_mask & inside_boxes(bag_box, (480, 640))[0]
    assert (person_mask & removed).any(), "the bag must overlap the person for the cut to show"
    assert torch.equal(result.masks[0], person_mask & ~removed)
    detector.clear_caches()


def test_pipeline_exclusion_in_one_pass_decodes_only_what_can_cut(detector, segmenter, zidane, monkeypatch):
    """Through the real models (random weights): excluded phrases are detected with the others and cut out; only the
    excluded objects whose box holds a kept pixel are segmented, and the result is the one decoding every one gives."""
    prompt = Prompt(("man",), ("shirt",))
    every = detector.detect(zidane, prompt, DetectionSettings(0.0, 0.2))
    shirts = every.scores[every.phrase_index == 1].sort(descending=True).values
    settings = DetectionSettings(float(shirts[39]), 0.2, max_detections=1)  # one man, some 40 shirts all over the frame
    pipeline = GroundedSam(detector, segmenter)
    detector.clear_caches()  # so that the pass below really runs the model
    calls, decoded = [], []
    decode = segmenter._decode
    monkeypatch.setattr(segmenter, "_decode", lambda embedding, boxes: decoded.append(len(boxes)) or decode(embedding, boxes))
    handle = detector.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = pipeline.segment(zidane, "man", settings, exclude="shirt")
    finally:
        handle.remove()
        monkeypatch.undo()
    assert len(calls) == 1  # one detection pass for the kept and the excluded phrases
    # the same rule with every excluded object segmented
    found = detector.detect(zidane, prompt, settings)
    kept, excluded = split_excluded(found, prompt)
    assert len(kept) == 1 and len(excluded) >= 30
    embedding = segmenter.embed(zidane)
    kept = kept.with_masks(segmenter.masks_for_boxes(embedding, kept.boxes)).clipped_to_image()
    excluded = excluded.with_masks(segmenter.masks_for_boxes(embedding, excluded.boxes)).clipped_to_image()
    removed = (excluded.masks & inside_boxes(excluded.boxes, excluded.image_size)).any(0)  # every excluded mask, in its box
    assert result.labels == kept.labels and torch.equal(result.boxes, kept.boxes)
    assert torch.equal(result.masks, kept.masks & ~removed)
    assert (kept.masks & removed).any(), "the cut must have removed pixels"
    assert set(result.phrase_index.tolist()) == {0}
    # the kept boxes, then only excluded boxes that hold a kept pixel (``test_an_excluded_mask_whose_cut_is_made_already_is_not_decoded``
    # shows which of those are skipped); the result above is the one every mask gives
    could_cut = int(can_cut(excluded.boxes, kept.masks.any(0)).sum())
    assert len(kept) < sum(decoded) <= len(kept) + could_cut, (decoded, could_cut, len(excluded))


def test_nothing_kept_runs_no_segmentation(detector, segmenter, zidane, monkeypatch):
    """When no kept phrase clears the threshold, neither SAM's encoder nor any mask decoding runs."""
    every = detector.detect(zidane, Prompt(("man",), ("shirt",)), DetectionSettings(0.0, 0.2, nms_iou=None))
    best = {phrase: float(every.scores[every.phrase_index == k].max()) for k, phrase in enumerate(("man", "shirt"))}
    keep, leave = sorted(best, key=best.get)  # keep the phrase whose best box scores lower
    threshold = (best[keep] + best[leave]) / 2  # so the excluded phrase has a box, the kept one none
    assert best[leave] - best[keep] > 1e-4
    assert len(detector.detect(zidane, Prompt((keep,), (leave,)), DetectionSettings(threshold, 0.2))) > 0
    monkeypatch.setattr(segmenter, "embed", lambda frame: pytest.fail("the encoder ran for an empty result"))
    result = GroundedSam(detector, segmenter).segment(zidane, keep, DetectionSettings(threshold, 0.2), exclude=leave)
    assert len(result) == 0 and result.masks.shape == (0, *zidane.shape[:2])


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
