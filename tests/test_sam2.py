"""SAM 2 / 2.1 as the mask stage: Meta's release files and transformers folders, parity with Meta's ``sam2``."""

from __future__ import annotations

import pytest
import torch
from test_sam_parity import assert_same_masks, boxes_for, iou

from grounded_sam import DetectionSettings, GroundedSam, ModelFileError, load_grounding_dino, load_sam
from grounded_sam.sam.sam2_segmenter import Sam2Segmenter

pytest.importorskip("sam2", reason="Meta's sam2 package is the reference (installed by scripts/install-test-deps.sh)")
pytestmark = pytest.mark.parity

# Every release size of SAM 2.1, and SAM 2 (its image path is the same network, told apart by one tensor).
SIZES = {
    "2.1-tiny": "SAM 2.1 Hiera-T",
    "2.1-small": "SAM 2.1 Hiera-S",
    "2.1-base_plus": "SAM 2.1 Hiera-B+",
    "2.1-large": "SAM 2.1 Hiera-L",
    "2-tiny": "SAM 2 Hiera-T",
}


def reference_masks(model, frame: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Meta's documented path: ``SAM2ImagePredictor.set_image`` then ``predict(box=..., multimask_output=False)``."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    predictor.set_image(frame.numpy())
    masks, _, _ = predictor.predict(box=boxes.numpy(), multimask_output=False)
    return torch.from_numpy(masks[:, 0] > 0)


@pytest.fixture(scope="module")
def tiny(sam2_tiny):
    """(Meta's model, the path of its release-format file) for SAM 2.1 tiny."""
    return sam2_tiny


@pytest.mark.parametrize("size", [pytest.param(size, marks=pytest.mark.quick) if size == "2.1-tiny" else size for size in SIZES])
def test_release_file_matches_meta(size, tmp_path, bus, zidane, sam2_tiny):
    from reference_models import meta_sam2, save_sam2_release

    if size == "2.1-tiny":  # built once for the whole run
        model, path = sam2_tiny
    else:
        model = meta_sam2(size, seed=len(size))
        path = save_sam2_release(model, tmp_path / f"sam{size}.pt")
    ours = load_sam(path, "cpu")
    assert isinstance(ours, Sam2Segmenter) and ours.name == SIZES[size]
    frame = zidane if size.endswith(("small", "large")) else bus
    boxes = boxes_for(frame)
    assert_same_masks(ours.masks_for_boxes(ours.embed(frame), boxes), reference_masks(model, frame, boxes))


def test_transformers_folder_matches_meta(tiny, tmp_path, zidane):
    """The hub's ``facebook/sam2.1-hiera-*`` folders say ``sam2_video``; plain ``sam2`` folders load too."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    model, path = tiny
    converted = load_sam(path, "cpu").model
    boxes = boxes_for(zidane)
    expected = reference_masks(model, zidane, boxes)
    converted.save_pretrained(tmp_path / "sam2")
    video = Sam2VideoModel(Sam2VideoConfig())  # the same image weights inside the video model
    video.load_state_dict(converted.state_dict(), strict=False)
    video.save_pretrained(tmp_path / "sam2_video")
    for folder in ("sam2", "sam2_video"):
        ours = load_sam(tmp_path / folder, "cpu")
        assert ours.name == "SAM 2 Hiera-T", folder
        assert_same_masks(ours.masks_for_boxes(ours.embed(zidane), boxes), expected)


def test_second_prompt_reuses_the_image_features(tiny, bus):
    _, path = tiny
    ours = load_sam(path, "cpu")
    calls = []
    ours.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    first = ours.embed(bus)
    again = ours.embed(bus)
    assert again is first and len(calls) == 1
    one, two = boxes_for(bus)[:1], boxes_for(bus)[1:]
    together = ours.masks_for_boxes(first, boxes_for(bus))
    assert torch.equal(torch.cat([ours.masks_for_boxes(again, one), ours.masks_for_boxes(again, two)]), together)
    assert len(calls) == 1


def test_grounded_sam_with_sam2_segments_every_detection(tiny, detector, zidane):
    """The whole pipeline with a SAM 2.1 mask stage: one mask per detection, each Meta's mask for that box."""
    model, path = tiny
    settings = DetectionSettings(box_threshold=0.0, max_detections=4)
    found = GroundedSam(detector, load_sam(path, "cpu"), precision="fp32").segment(zidane, "person . tie", settings)
    assert len(found) == 4
    prompted = detector.detect(zidane, "person . tie", settings).boxes  # SAM gets the detector's boxes; the result reports them clipped
    expected = reference_masks(model, zidane, prompted)
    for i in range(4):
        assert iou(found.masks[i], expected[i]) >= 0.999


def release_without(model, prefix: str, path):
    """``model`` saved as Meta ships it, minus every tensor under ``prefix``."""
    torch.save({"model": {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}}, path)
    return path


def test_incomplete_sam2_file_is_refused(tiny, tmp_path):
    model, _ = tiny
    cut = release_without(model, "sam_mask_decoder.transformer.layers.1.", tmp_path / "cut.pt")
    with pytest.raises(ModelFileError, match=r"cut\.pt is incomplete: \d+ SAM 2\.1 Hiera-T tensors are missing.*download it again"):
        load_sam(cut)
    no_encoder = release_without(model, "image_encoder.trunk.", tmp_path / "no_encoder.pt")
    with pytest.raises(ModelFileError, match=r"is incomplete: it has no SAM 2 tensor 'image_encoder\.trunk\.patch_embed"):
        load_sam(no_encoder)


def test_incomplete_sam2_folder_is_refused_not_filled_with_random_weights(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = tiny
    load_sam(path, "cpu").model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if not k.startswith("mask_decoder.iou_prediction_head.")}, weights)
    with pytest.raises(ModelFileError, match=r"is an incomplete SAM model: 6 tensor\(s\) missing, e\.g\. mask_decoder\.iou_prediction_head"):
        load_sam(tmp_path)


def test_unknown_sam2_size_is_named(tiny, tmp_path):
    pruned = release_without(tiny[0], "image_encoder.trunk.blocks.11.", tmp_path / "pruned.pt")
    with pytest.raises(ModelFileError, match=r"unknown size \(Hiera width 96, blocks per stage \[1, 2, 7, 1\]\)"):
        load_sam(pruned)


def test_sam2_files_in_the_grounding_dino_loader_are_sent_to_the_sam_loader(tiny, tmp_path):
    _, path = tiny
    with pytest.raises(ModelFileError, match="Segment Anything checkpoint, not Grounding DINO: choose it in the SAM loader"):
        load_grounding_dino(path)
    load_sam(path, "cpu").model.save_pretrained(tmp_path / "folder")
    with pytest.raises(ModelFileError, match=r"'sam2' model, not Grounding DINO.*choose it in the SAM loader"):
        load_grounding_dino(tmp_path / "folder")
