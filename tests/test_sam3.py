"""SAM 3 as the text stage and in both sockets: Meta's release file and transformers folders, parity with Meta's ``sam3``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_sam_parity import assert_same_masks

from grounded_sam import DetectionSettings, GroundedSam, InputError, ModelFileError, load_grounding_dino, load_sam
from grounded_sam.sam3.detector import Sam3Detector, upscale_masks
from grounded_sam.sam3.segmenter import Sam3Segmenter

pytest.importorskip("sam3", reason="Meta's sam3 package is the reference (installed by scripts/install-test-deps.sh)")

FEW = DetectionSettings(box_threshold=0.0, nms_iou=None, max_detections=10)


@pytest.fixture(scope="module")
def release(tmp_path_factory, bus):
    """(Meta's SAM 3 image model, its ``sam3.pt``-format file), two ViT and two text layers."""
    from reference_models import calibrate_sam3, meta_sam3, save_sam3_release

    model = meta_sam3(seed=1)
    calibrate_sam3(model, bus)
    return model, save_sam3_release(model, tmp_path_factory.mktemp("sam3") / "sam3.pt")


PHRASES = ("person", "red tie")


@pytest.fixture(scope="module")
def meta_zidane(release, zidane) -> dict[str, dict[str, torch.Tensor]]:
    """Meta's documented path on zidane.jpg: ``Sam3Processor.set_image`` once, ``set_text_prompt`` per phrase.

    Every query is kept (threshold 0), in query order.
    """
    from reference_models import meta_sam3_on_cpu
    from sam3.model.sam3_image_processor import Sam3Processor

    found = {}
    with meta_sam3_on_cpu():
        processor = Sam3Processor(release[0], device="cpu", confidence_threshold=0.0)
        state = processor.set_image(Image.fromarray(zidane.numpy()))
        for phrase in PHRASES:
            processor.reset_all_prompts(state)
            out = processor.set_text_prompt(phrase, state)
            found[phrase] = {"scores": out["scores"].clone(), "boxes": out["boxes"].clone(), "masks": out["masks"][:, 0].clone()}
    return found


def threshold_keeping_some_of_each(scores: list[torch.Tensor]) -> float:
    """A threshold that keeps some instances of every phrase, in the widest gap between scores (none sits on its edge)."""
    low, high = max(float(s.min()) for s in scores), min(float(s.max()) for s in scores)
    if low >= high:  # the phrases' scores do not overlap: cut inside the lowest-scoring phrase
        lowest = min(scores, key=lambda s: float(s.max()))
        low, high = float(lowest.min()), float(lowest.max())
    ordered = torch.cat(scores).sort().values
    ordered = ordered[(ordered >= low) & (ordered <= high)]
    i = int((ordered[1:] - ordered[:-1]).argmax())
    return float(ordered[i] + ordered[i + 1]) / 2


def test_every_query_matches_meta(release, meta_zidane, zidane):
    """All 200 queries of both phrases, one by one: score within 1e-3, box within 1e-3 px, mask IoU >= 0.999."""
    detector = load_grounding_dino(release[1], "cpu")
    assert isinstance(detector, Sam3Detector) and detector.name == "SAM 3 (ViT 1024x2)"
    height, width = zidane.shape[:2]
    for phrase, ref in meta_zidane.items():
        scores, boxes, mask_logits = detector.raw_predictions(zidane, phrase)
        assert len(scores) == len(ref["scores"]) == 200
        assert (scores - ref["scores"]).abs().max() < 1e-3
        assert (boxes * torch.tensor([width, height, width, height]) - ref["boxes"]).abs().max() < 1e-3
        assert_same_masks(upscale_masks(mask_logits, (height, width)), ref["masks"])


def test_text_path_matches_meta(release, meta_zidane, zidane):
    """A two-phrase prompt at a threshold: each phrase's instances are Meta's for that phrase alone, labelled with it."""
    detector = load_grounding_dino(release[1], "cpu")
    threshold = threshold_keeping_some_of_each([ref["scores"] for ref in meta_zidane.values()])
    found = detector.detect(zidane, " . ".join(PHRASES), DetectionSettings(box_threshold=threshold, nms_iou=None))
    assert found.scores.diff().le(0).all()
    for index, (phrase, ref) in enumerate(meta_zidane.items()):
        mine = found.select(found.phrase_index == index)
        assert all(label == phrase for label in mine.labels)
        kept = ref["scores"] > threshold
        assert 0 < len(mine) == int(kept.sum())
        # match each of ours to Meta's instance with the same box (every query has its own reference box)
        match = torch.cdist(mine.boxes, ref["boxes"][kept]).argmin(dim=1)
        assert match.unique().numel() == len(mine)
        assert (mine.boxes - ref["boxes"][kept][match]).abs().max() < 1e-3
        assert (mine.scores - ref["scores"][kept][match]).abs().max() < 1e-3
        assert_same_masks(mine.masks, ref["masks"][kept][match])


def test_features_computed_once_per_frame(release, bus, zidane):
    """Every phrase and every later prompt on the same frame reuse its image features; a new frame does not."""
    _, path = release
    detector = load_grounding_dino(path, "cpu")
    calls = []
    hook = detector.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = detector.detect(bus, "bus . person . window", FEW)
        again = detector.detect(bus, "person", FEW)
        assert len(calls) == 1
        detector.detect(zidane, "person", FEW)
        assert len(calls) == 2
    finally:
        hook.remove()
    person = first.select(first.phrase_index == 1)  # the best persons of the three phrases' best ten
    assert torch.equal(again.boxes[: len(person)], person.boxes) and torch.equal(again.masks[: len(person)], person.masks)


def test_both_sockets_one_pass(release, bus):
    """SAM 3 in both loaders: one model, one pass (no segmentation run), the detector's masks, boxes clipped."""
    _, path = release
    detector, segmenter = load_grounding_dino(path, "cpu"), load_sam(path, "cpu")
    assert isinstance(segmenter, Sam3Segmenter) and segmenter.detector is detector and segmenter.model is detector.model
    pipeline = GroundedSam(detector, segmenter, "fp32")
    assert pipeline.one_pass()
    settings = DetectionSettings(box_threshold=0.0, max_detections=8)
    found = pipeline.segment(bus, "bus . person", settings)
    direct = detector.detect(bus, "bus . person", settings)
    assert 0 < len(found) <= 8 and found.labels == direct.labels
    assert torch.equal(found.masks, direct.masks)
    assert torch.equal(found.boxes, direct.clipped_to_image().boxes)


def test_sam3_boxes_segmented_by_sam(release, bus, sam_checkpoint):
    """SAM 3 boxes with a SAM 1 mask stage: SAM segments SAM 3's boxes (SAM 3's own masks are not used)."""
    _, path = release
    detector, segmenter = load_grounding_dino(path, "cpu"), load_sam(sam_checkpoint, "cpu")
    pipeline = GroundedSam(detector, segmenter, "fp32")
    assert not pipeline.one_pass()
    settings = DetectionSettings(box_threshold=0.0, max_detections=4)
    found = pipeline.segment(bus, "bus", settings)
    boxes = detector.detect(bus, "bus", settings).boxes
    assert len(found) == len(boxes) > 0
    assert torch.equal(found.masks, segmenter.masks_for_boxes(segmenter.embed(bus), boxes))


def test_other_boxes_with_sam3_masks_refused(release, bus, detector):
    """Grounding DINO boxes with SAM 3 in the SAM socket: a clear error (SAM 3's tracker head is not wired in)."""
    pipeline = GroundedSam(detector, load_sam(release[1], "cpu"), "fp32")
    assert not pipeline.one_pass()
    with pytest.raises(InputError, match="segments SAM 3's own detections only: choose the same SAM 3 in the Grounding DINO loader"):
        pipeline.segment(bus, "bus", DetectionSettings(box_threshold=0.0, max_detections=2))


def test_transformers_folder(release, tmp_path, zidane):
    """A transformers ``sam3`` folder loads in both loaders and gives the release file's results."""
    _, path = release
    converted = load_grounding_dino(path, "cpu")
    converted.model.save_pretrained(tmp_path / "sam3")
    detector = load_grounding_dino(tmp_path / "sam3", "cpu")
    assert isinstance(detector, Sam3Detector) and load_sam(tmp_path / "sam3", "cpu").detector is detector
    ours, expected = detector.detect(zidane, "person", FEW), converted.detect(zidane, "person", FEW)
    assert torch.equal(ours.boxes, expected.boxes) and torch.equal(ours.masks, expected.masks)


def test_wrong_sam3_files(release, tmp_path):
    """A cut file names what is missing; a file without the ViT's rotary tables says why it cannot be sized."""
    _, path = release
    state = torch.load(path, weights_only=True)["model"]
    cut = {k: v for k, v in state.items() if "segmentation_head" not in k}
    torch.save({"model": cut}, tmp_path / "cut.pt")
    with pytest.raises(ModelFileError, match=r"incomplete: \d+ SAM 3 tensors are missing .*mask_decoder.*download it again"):
        load_grounding_dino(tmp_path / "cut.pt", "cpu")
    no_rope = {k: v for k, v in state.items() if not k.endswith("freqs_cis")}
    torch.save({"model": no_rope}, tmp_path / "no_rope.pt")
    with pytest.raises(ModelFileError, match="rotary tables"):
        load_sam(tmp_path / "no_rope.pt", "cpu")
