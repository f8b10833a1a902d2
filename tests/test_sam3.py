"""SAM 3 as the text stage and in both sockets: Meta's release file and transformers folders, parity with Meta's ``sam3``."""

from __future__ import annotations

import warnings
from unittest import mock

import pytest
import torch
from PIL import Image
from test_sam_parity import assert_same_masks

from grounded_sam import DetectionSettings, GroundedSam, InputError, ModelFileError, load_grounding_dino, load_sam
from grounded_sam.prompts import Prompt
from grounded_sam.sam3.detector import Sam3Detector, upscale_masks
from grounded_sam.sam3.segmenter import Sam3Segmenter
from grounded_sam.selection.exclusion import inside_boxes

pytest.importorskip("sam3", reason="Meta's sam3 package is the reference (installed by scripts/install-test-deps.sh)")
pytestmark = pytest.mark.parity

FEW = DetectionSettings(box_threshold=0.0, nms_iou=None, max_detections=10)


@pytest.fixture(scope="module")
def release(sam3_release):
    """(Meta's SAM 3 image model with its box-to-mask head, its ``sam3.pt``-format file), two ViT and two text layers."""
    return sam3_release


@pytest.fixture(scope="module")
def sam3(release) -> Sam3Detector:
    """The release file loaded once for this module: while it is alive, both loaders hand out this same model
    (loading SAM 3 again from the same file gives the model in use), so its per-frame features are computed once."""
    return load_grounding_dino(release[1], "cpu")


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


def test_every_query_matches_meta(sam3, meta_zidane, zidane):
    """All 200 queries of both phrases, one by one: score within 1e-3, box within 1e-3 px, mask IoU >= 0.999."""
    detector = sam3
    assert isinstance(detector, Sam3Detector) and detector.name == "SAM 3 (ViT 1024x2)"
    height, width = zidane.shape[:2]
    for phrase, ref in meta_zidane.items():
        scores, boxes, mask_logits = detector.raw_predictions(zidane, phrase)
        assert len(scores) == len(ref["scores"]) == 200
        assert (scores - ref["scores"]).abs().max() < 1e-3
        assert (boxes * torch.tensor([width, height, width, height]) - ref["boxes"]).abs().max() < 1e-3
        assert_same_masks(upscale_masks(mask_logits, (height, width)), ref["masks"])


def test_text_path_matches_meta(sam3, meta_zidane, zidane):
    """A two-phrase prompt at a threshold: each phrase's instances are Meta's for that phrase alone, labelled with it."""
    detector = sam3
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


def test_features_computed_once_per_frame(release, sam3, bus, zidane):
    """Every phrase and every later prompt on the same frame reuse its image features; a new frame does not."""
    _, path = release
    detector = load_grounding_dino(path, "cpu")
    assert detector is sam3  # the model in use, not a second copy
    detector.clear_caches()  # count from a fresh start
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


def test_both_sockets_one_pass(release, sam3, bus):
    """SAM 3 in both loaders: one model, one pass (no segmentation run), the detector's masks, boxes clipped."""
    _, path = release
    detector = load_grounding_dino(path, "cpu")
    with mock.patch("grounded_sam.recognise.read_state_dict", side_effect=AssertionError("the file was read again")):
        segmenter = load_sam(path, "cpu")
    assert isinstance(segmenter, Sam3Segmenter) and segmenter.detector is detector and segmenter.model is detector.model
    pipeline = GroundedSam(detector, segmenter, "fp32")
    assert pipeline.one_pass()
    settings = DetectionSettings(box_threshold=0.0, max_detections=8)
    found = pipeline.segment(bus, "bus . person", settings)
    direct = detector.detect(bus, "bus . person", settings)
    assert 0 < len(found) <= 8 and found.labels == direct.labels
    assert torch.equal(found.masks, direct.masks)
    assert torch.equal(found.boxes, direct.clipped_to_image().boxes)
    # exclude: the excluded phrase's instances (same pass) are cut out of the kept masks, each inside its own box
    both = detector.detect(bus, Prompt(("bus",), ("person",)), settings)
    persons = both.select(both.phrase_index == 1).clipped_to_image()
    removed = (persons.masks & inside_boxes(persons.boxes, persons.image_size)).any(dim=0)
    kept = pipeline.segment(bus, "bus", settings, exclude="person")
    assert len(kept) > 0 and set(kept.labels) == {"bus"} and removed.any()
    assert not (kept.masks & removed).any()
    uncut = both.select(both.phrase_index == 0).clipped_to_image()
    assert torch.equal(kept.masks, uncut.masks & ~removed) and (uncut.masks & removed).any()  # the cut took pixels
    # Impact Pack's mask detector from SAM 3 in the Grounding DINO socket alone: SAM 3's own masks, in one pass
    from grounded_sam.comfy.impact_nodes import GroundingDinoDetectorProvider
    from grounded_sam.comfy.segs import combined_mask

    _, segm = GroundingDinoDetectorProvider().main(detector, "bus . person", 0.25, max_detections=8)
    assert torch.equal(segm.detect_combined(bus.float()[None] / 255, 0.0, 0), combined_mask(found))


def test_sam3_boxes_segmented_by_sam(release, sam3, bus, sam_checkpoint):
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


BOXES = torch.tensor([[50.0, 230.0, 810.0, 750.0], [220.0, 400.0, 350.0, 860.0], [0.0, 550.0, 80.0, 880.0], [660.0, 380.0, 810.0, 880.0]])


@pytest.mark.quick
def test_box_path_matches_meta(release, sam3, bus):
    """Boxes to masks: Meta's ``Sam3Image.predict_inst(box=..., multimask_output=False)`` on the same weights.

    Meta's predictor fills holes of up to 256 pixels in the low-resolution mask; ours does too,
    and the test checks that the filling mattered on these masks (it would otherwise prove nothing).
    """
    from reference_models import meta_sam3_on_cpu
    from sam3.model.sam3_image_processor import Sam3Processor

    model, path = release
    with meta_sam3_on_cpu(), warnings.catch_warnings():
        warnings.simplefilter("error")  # Meta skips hole filling with a warning when scikit-image is missing
        processor = Sam3Processor(model, device="cpu")
        state = processor.set_image(Image.fromarray(bus.numpy()))
        expected = torch.stack([torch.as_tensor(model.predict_inst(state, box=box.numpy(), multimask_output=False)[0][0]) for box in BOXES])
    segmenter = load_sam(path, "cpu")
    embedding = segmenter.embed(bus)
    ours = segmenter.masks_for_boxes(embedding, BOXES)
    assert_same_masks(ours, expected.bool())
    with mock.patch("grounded_sam.sam3.segmenter.fill_small_holes", lambda logits: logits):
        unfilled = segmenter.masks_for_boxes(embedding, BOXES)
    assert (unfilled != expected.bool()).any(dim=(1, 2)).sum() >= 2


def test_other_boxes_with_sam3_masks(release, sam3, bus, detector):
    """Grounding DINO boxes with SAM 3 in the SAM socket: SAM 3's box head segments them, its ViT run once per frame
    for both stages of SAM 3 (the text path's features are reused by the box path)."""
    segmenter = load_sam(release[1], "cpu")
    segmenter.clear_caches()  # count from a fresh start
    pipeline = GroundedSam(detector, segmenter, "fp32")
    assert not pipeline.one_pass()
    settings = DetectionSettings(box_threshold=0.0, max_detections=3)
    calls = []
    hook = segmenter.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        found = pipeline.segment(bus, "bus", settings)
        segmenter.detector.detect(bus, "bus", FEW)
    finally:
        hook.remove()
    assert len(calls) == 1
    boxes = detector.detect(bus, "bus", settings).clipped_to_image().boxes
    assert len(found) == len(boxes) > 0 and torch.equal(found.boxes, boxes)
    assert torch.equal(found.masks, segmenter.masks_for_boxes(segmenter.embed(bus), boxes))


def test_transformers_folder(release, sam3, tmp_path, zidane):
    """A transformers ``sam3`` folder loads in both loaders and gives the release file's results; it has no tracker,
    and tracking with it says what to load."""
    _, path = release
    converted = load_grounding_dino(path, "cpu")
    converted.model.save_pretrained(tmp_path / "sam3")
    detector = load_grounding_dino(tmp_path / "sam3", "cpu")
    segmenter = load_sam(tmp_path / "sam3", "cpu")
    assert isinstance(detector, Sam3Detector) and segmenter.detector is detector
    ours, expected = detector.detect(zidane, "person", FEW), converted.detect(zidane, "person", FEW)
    assert torch.equal(ours.boxes, expected.boxes) and torch.equal(ours.masks, expected.masks)
    with pytest.raises(InputError, match="has no box-to-mask head .* use Meta's sam3.pt"):
        segmenter.embed(zidane)
    assert segmenter.video is None
    with pytest.raises(InputError, match="has no tracker .* load Meta's sam3.pt"):  # said before any model runs
        list(GroundedSam(detector, segmenter).track(torch.zeros((2, 8, 8, 3)), "person"))


@pytest.fixture(scope="module")
def video_model(release, sam3):
    """A transformers ``Sam3VideoModel`` holding the release file's detector and tracker tensors (built once, saved per layout)."""
    from transformers import Sam3VideoConfig, Sam3VideoModel

    release_sam = load_sam(release[1], "cpu")
    memory_layers = release_sam.video.config.memory_attention_num_layers
    video = Sam3VideoModel(Sam3VideoConfig(detector_config=release_sam.model.config.to_dict(), tracker_config={"memory_attention_num_layers": memory_layers}))
    video.detector_model.load_state_dict(release_sam.model.state_dict())
    video.tracker_neck.load_state_dict(release_sam.detector.box_head.vision_encoder.neck.state_dict())
    loaded = video.tracker_model.load_state_dict(release_sam.video.state_dict(), strict=False)  # the box head and the video memory
    return video, loaded


@pytest.mark.parametrize("layout", ["hub", "save_pretrained"])
def test_video_folder(release, video_model, tmp_path, bus, layout):
    """A transformers ``sam3_video`` folder (what the hub's ``facebook/sam3`` is), built from the release file's tensors:
    both stages load from it, with its box-to-mask head and tracker, and give the release file's detections, box-path
    masks and tracker.

    "hub": the tensors under the model's own names, as the hub's files hold them; "save_pretrained": as transformers
    writes such a model (the tracker under ``tracker_model.tracker_model.``)."""
    from safetensors.torch import save_file

    release_sam = load_sam(release[1], "cpu")
    video, loaded = video_model
    assert not loaded.unexpected_keys and not loaded.missing_keys
    folder = tmp_path / "sam3"
    if layout == "hub":
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in video.state_dict().items()}, folder / "model.safetensors")
        video.config.save_pretrained(folder)
    else:
        video.save_pretrained(folder)
    segmenter = load_sam(folder, "cpu")
    assert segmenter.detector.box_head is not None and load_grounding_dino(folder, "cpu") is segmenter.detector
    tracker, release_tracker = segmenter.video.state_dict(), release_sam.video.state_dict()
    assert tracker.keys() == release_tracker.keys() and all(torch.equal(tracker[k], release_tracker[k]) for k in tracker)  # it tracks alike
    assert torch.equal(segmenter.masks_for_boxes(segmenter.embed(bus), BOXES), release_sam.masks_for_boxes(release_sam.embed(bus), BOXES))
    ours, expected = segmenter.detector.detect(bus, "bus", FEW), release_sam.detector.detect(bus, "bus", FEW)
    assert torch.equal(ours.boxes, expected.boxes) and torch.equal(ours.masks, expected.masks)


def test_file_without_the_clip_projection(release, sam3, tmp_path, zidane):
    """Repackaged files leave out CLIP's pooled projection (SAM 3 never reads it; ComfyUI's loader refuses its shape):
    such a file loads and gives the release file's results."""
    state = torch.load(release[1], weights_only=True)["model"]
    del state["detector.backbone.language_backbone.encoder.text_projection"]
    torch.save({"model": state}, tmp_path / "repackaged.pt")
    ours, expected = load_grounding_dino(tmp_path / "repackaged.pt", "cpu"), load_grounding_dino(release[1], "cpu")
    found, wanted = ours.detect(zidane, "person", FEW), expected.detect(zidane, "person", FEW)
    assert torch.equal(found.boxes, wanted.boxes) and torch.equal(found.scores, wanted.scores) and torch.equal(found.masks, wanted.masks)


def test_wrong_sam3_files(release, tmp_path):
    """A cut file names what is missing; a file without the ViT's rotary tables says why it cannot be sized; SAM 3.1 is named."""
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
    sam31 = {**state, "detector.backbone.vision_backbone.propagation_convs.0.conv_1x1.weight": torch.zeros(256, 1024, 1, 1)}
    torch.save({"model": sam31}, tmp_path / "sam3.1.pt")
    with pytest.raises(ModelFileError, match="is a SAM 3.1 checkpoint .* not supported; use SAM 3's sam3.pt"):
        load_grounding_dino(tmp_path / "sam3.1.pt", "cpu")
