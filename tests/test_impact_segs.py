"""Our objects as Impact Pack SEGS, and the text-prompted BBOX / SEGM detectors, outside ComfyUI.

The real Impact Pack inside both real ComfyUI servers is in tests/comfyui/test_impact.py; here the
layout's parts are checked against their references (OpenCV's morphology for ``dilation``) and the
nodes against the library on the same models.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from scenes import PROMPT

from grounded_sam import DetectionSettings, GroundedSam
from grounded_sam.comfy.impact_nodes import GroundingDinoDetectorProvider, ToSEGS
from grounded_sam.comfy.objects import SegmentedObjects
from grounded_sam.comfy.segs import SEG, combined_mask, crop_region, dilate, to_segs
from grounded_sam.errors import InputError
from grounded_sam.records import Detections


@pytest.mark.parametrize("pixels", [1, 2, 3, 4, 7, 10, -1, -2, -3, -6])
def test_dilation_is_opencvs_square(pixels):
    """Impact dilates with ``cv2.dilate`` (``cv2.erode`` when negative) and a square kernel of that side."""
    rng = np.random.default_rng(abs(pixels))
    masks = torch.from_numpy(rng.random((3, 37, 53)) > 0.8)
    masks[1] = False
    masks[1, 5:30, 10:40] = True  # a solid block touching nothing: grows and shrinks visibly
    masks[2, :, :20] = True  # touching the border: the border never erodes
    kernel = np.ones((abs(pixels), abs(pixels)), np.uint8)
    op = cv2.dilate if pixels > 0 else cv2.erode
    want = np.stack([op(m.numpy().astype(np.uint8), kernel) > 0 for m in masks])
    got = dilate(masks, pixels).numpy()
    assert np.array_equal(got, want)
    assert (got.sum() != masks.sum().item()) == (abs(pixels) > 1)  # a side of 1 changes nothing, in OpenCV too


def test_crop_region_grows_the_box_and_stays_inside():
    assert crop_region((40.0, 50.0, 60.0, 90.0), 3.0, (200, 300)) == [20, 10, 80, 130]  # 20x40 box -> 60x120 around its centre
    assert crop_region((0.0, 0.0, 20.0, 20.0), 3.0, (100, 100)) == [0, 0, 60, 60]  # pushed back in, not shrunk
    assert crop_region((90.0, 90.0, 100.0, 100.0), 3.0, (100, 100)) == [70, 70, 100, 100]
    assert crop_region((10.0, 10.0, 90.0, 90.0), 2.0, (100, 100)) == [0, 0, 100, 100]  # larger than the image: the image
    assert crop_region((10.5, 20.25, 30.5, 40.75), 1.0, (100, 100)) == [10, 20, 30, 40]


def one_frame_objects() -> Detections:
    masks = torch.zeros((3, 60, 80), dtype=torch.bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 40:58, 50:78] = True
    masks[2, 5:8, 5:8] = True  # a 3 x 3 speck: dropped by drop_size
    return Detections(
        boxes=torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 40.0, 78.0, 58.0], [5.0, 5.0, 8.0, 8.0]]),
        scores=torch.tensor([0.9, 0.6, 0.5]),
        labels=("dog", "red ball", "dog"),
        frame_index=torch.zeros(3, dtype=torch.int64),
        image_size=(60, 80),
        num_frames=1,
        masks=masks,
    )


def test_segs_hold_each_object_cut_to_its_crop_region():
    found = one_frame_objects()
    image = torch.rand((1, 60, 80, 3))
    size, segs = to_segs(found, crop_factor=1.5, dilation=2, drop_size=5, image=image)
    assert size == (60, 80) and len(segs) == 2  # the speck is left out
    assert all(isinstance(s, SEG) and s.control_net_wrapper is None for s in segs)
    assert [s.label for s in segs] == ["dog", "red ball"]
    assert [float(s.confidence) for s in segs] == pytest.approx([0.9, 0.6])
    full = dilate(found.masks[:2], 2)
    for i, seg in enumerate(segs):
        x1, y1, x2, y2 = seg.crop_region
        assert seg.crop_region == crop_region(found.boxes[i].tolist(), 1.5, (60, 80))
        assert seg.cropped_mask.dtype == np.float32 and seg.cropped_mask.shape == (y2 - y1, x2 - x1)
        assert np.array_equal(seg.cropped_mask > 0, full[i, y1:y2, x1:x2].numpy())
        assert 0 < seg.cropped_mask.sum() < seg.cropped_mask.size
        assert torch.equal(seg.cropped_image, image[:, y1:y2, x1:x2])
        assert np.allclose(seg.bbox, found.boxes[i].numpy())
    # a box detector's SEGS hold the filled boxes
    _, boxes = to_segs(found, crop_factor=2.0, drop_size=5, boxes_only=True)
    x1, y1, x2, y2 = boxes[0].crop_region
    want = np.zeros((60, 80), bool)
    want[10:30, 10:40] = True
    assert np.array_equal(boxes[0].cropped_mask > 0, want[y1:y2, x1:x2])


def test_combined_mask_is_every_object_grown():
    found = one_frame_objects()
    assert torch.equal(combined_mask(found, 3) > 0, dilate(found.masks, 3).any(0))
    assert torch.equal(combined_mask(found) > 0, found.masks.any(0))
    boxes = combined_mask(found, boxes_only=True) > 0
    assert boxes.sum() == 20 * 30 + 18 * 28 + 9


def test_segs_refuse_what_they_cannot_hold():
    found = one_frame_objects()
    two = Detections.concat([found, found], 2, found.image_size)
    with pytest.raises(InputError, match="one image"):
        to_segs(two)
    with pytest.raises(InputError, match="crop_factor"):
        to_segs(found, crop_factor=0.5)
    with pytest.raises(InputError, match="no masks"):
        to_segs(found.with_masks(None))
    with pytest.raises(InputError, match="connect the image"):
        to_segs(found, image=torch.rand((1, 10, 10, 3)))
    # ToSEGS: a frame that is not there
    second = replace(found.select(torch.tensor([1])), frame_index=torch.ones(1, dtype=torch.int64))
    objects = SegmentedObjects.of(Detections.concat([found, second], 2, found.image_size))
    with pytest.raises(InputError, match="frame 2 does not exist"):
        ToSEGS().main(objects, 3.0, 0, 10, frame=2)
    (segs,) = ToSEGS().main(objects, 3.0, 0, 1, frame=1)
    assert [s.label for s in segs[1]] == ["red ball"]


@pytest.fixture(scope="module")
def image_and_threshold(detector, bus):
    """The bus photo and a box threshold under which the tiny detector keeps a few objects."""
    frame = bus[:640, :640]
    scores = detector.detect(frame, PROMPT, DetectionSettings(0.0, 0.0)).scores
    assert len(scores) >= 4
    return frame.float()[None] / 255.0, float(scores[3] + scores[4]) / 2


def test_provider_detectors_equal_the_library(detector, segmenter, image_and_threshold):
    image, threshold = image_and_threshold
    bbox_detector, segm_detector = GroundingDinoDetectorProvider().main(detector, PROMPT, 0.2, sam_model=segmenter)
    library = GroundedSam(detector, segmenter, "fp32")
    settings = DetectionSettings(threshold, 0.2)
    found = library.segment(image, PROMPT, settings)
    boxes = library.detect(image, PROMPT, settings)
    assert boxes.masks is None and len(boxes) == len(found) == 4
    assert torch.equal(boxes.boxes, found.boxes) and boxes.labels == found.labels and torch.equal(boxes.scores, found.scores)

    size, segs = segm_detector.detect(image, threshold, 4, 2.5, 1)
    _, want = to_segs(found, 2.5, 4, 1, image)
    assert size == (640, 640) and [s.label for s in segs] == [s.label for s in want] == list(found.labels)
    for got, expected in zip(segs, want, strict=True):
        assert got.crop_region == expected.crop_region and np.array_equal(got.cropped_mask, expected.cropped_mask)
        assert 0 < got.cropped_mask.sum() < got.cropped_mask.size  # SAM's masks, neither empty nor the whole crop
    _, box_segs = bbox_detector.detect(image, threshold, 0, 2.5, 1)
    _, want_boxes = to_segs(boxes, 2.5, 0, 1, image, boxes_only=True)
    assert all(np.array_equal(g.cropped_mask, w.cropped_mask) for g, w in zip(box_segs, want_boxes, strict=True))
    assert torch.equal(segm_detector.detect_combined(image, threshold, 0) > 0, found.masks.any(0))
    assert torch.equal(bbox_detector.detect_combined(image, threshold, 0), combined_mask(boxes, boxes_only=True))


def test_provider_asks_for_what_it_lacks(detector, segmenter, image_and_threshold):
    image, threshold = image_and_threshold
    bbox_detector, segm_detector = GroundingDinoDetectorProvider().main(detector, "", 0.2)
    with pytest.raises(InputError, match="prompt is empty"):
        bbox_detector.detect(image, threshold, 0, 3.0)
    bbox_detector.setAux("person")  # what FaceDetailer does, with "face"
    assert {s.label for s in bbox_detector.detect(image, 0.0, 0, 3.0)[1]} == {"person"}
    bbox_detector.setAux(None)  # and after: its mask detector, never asked, looks for what the pair was last asked
    with pytest.raises(InputError, match="connect a sam_model"):
        segm_detector.detect(image, threshold, 0, 3.0)
    with pytest.raises(InputError, match="one image at a time"):
        bbox_detector.detect(image.expand(2, -1, -1, -1), threshold, 0, 3.0)
    # the provider's own threshold wins over the node's
    strict, _ = GroundingDinoDetectorProvider().main(detector, PROMPT, 0.2, sam_model=segmenter, threshold=0.99)
    assert strict.detect(image, threshold, 0, 3.0)[1] == []


def test_a_pipeline_without_a_segmenter_gives_boxes(detector, image_and_threshold):
    """``GroundedSam(detector, None)``: boxes alone (the provider's box detector without SAM); masks are refused clearly."""
    image, threshold = image_and_threshold
    boxes_only = GroundedSam(detector, None, "fp32")
    found = boxes_only.detect(image, PROMPT, DetectionSettings(threshold, 0.2))
    assert len(found) == 4 and found.masks is None and found.num_frames == 1
    with pytest.raises(InputError, match="no segmenter"):
        boxes_only.segment(image, PROMPT, DetectionSettings(threshold, 0.2))
