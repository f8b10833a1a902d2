"""MM-Grounding-DINO as the box stage: transformers folders, parity with transformers' own processor path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.ops import nms

from grounded_sam import DetectionSettings, GroundedSam, ModelFileError, load_grounding_dino, load_sam
from grounded_sam.cli import main
from grounded_sam.media.images import load_image_file

pytestmark = pytest.mark.parity

PHRASES = ["person", "tie", "bus"]
PROMPT = " . ".join(PHRASES)


@pytest.fixture(scope="module")
def mm_detector(mm_folder):
    return load_grounding_dino(mm_folder, "cpu")


@pytest.fixture(scope="module")
def reference(mm_folder):
    from transformers import AutoProcessor, MMGroundingDinoForObjectDetection

    return AutoProcessor.from_pretrained(mm_folder), MMGroundingDinoForObjectDetection.from_pretrained(mm_folder).eval()


# transformers' forward pass per (model, frame): thresholds only change the post-processing, so each runs once.
_FORWARDS: dict[tuple, tuple] = {}


def transformers_detections(reference, frame: torch.Tensor, box_threshold: float, text_threshold: float) -> dict:
    """transformers' documented path: processor -> model -> post_process_grounded_object_detection (no NMS)."""
    processor, model = reference
    key = (id(model), frame.data_ptr(), tuple(frame.shape))
    if key not in _FORWARDS:
        inputs = processor(images=Image.fromarray(frame.numpy()), text=". ".join(PHRASES) + ".", return_tensors="pt")
        with torch.no_grad():
            _FORWARDS[key] = inputs, model(**inputs)
    inputs, outputs = _FORWARDS[key]
    result = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold, target_sizes=[tuple(frame.shape[:2])]
    )[0]
    order = result["scores"].argsort(descending=True)
    labels = [words(result["text_labels"][i]) for i in order.tolist()]
    return {"boxes": result["boxes"][order], "scores": result["scores"][order], "labels": labels}


def words(label: str) -> str:
    """transformers' label without the special tokens and separators it keeps when they score ("tie . [SEP]")."""
    return " ".join(w for w in label.replace(".", " ").split() if w not in ("[CLS]", "[SEP]", "[PAD]"))


def between(scores: torch.Tensor, count: int) -> float:
    """A threshold with ``count`` scores above it and a clear gap on each side, whatever the random weights score."""
    gaps = [(float(scores[k - 1] - scores[k]), k) for k in range(count, count + 10)]
    gap, k = max(gaps)
    assert gap > 1e-4
    return float(scores[k - 1] + scores[k]) / 2


def test_name_and_architecture_from_the_folder(mm_detector):
    assert mm_detector.name.startswith("MM-Grounding-DINO")
    assert type(mm_detector.model).__name__ == "MMGroundingDinoForObjectDetection"


@pytest.mark.parametrize("image", [pytest.param("zidane", marks=pytest.mark.quick), "bus"])
def test_detections_match_transformers_pipeline(request, image, mm_detector, reference):
    frame = request.getfixturevalue(image)
    everything = transformers_detections(reference, frame, 0.0, 0.0)
    box_threshold = between(everything["scores"], 25)
    height, width = frame.shape[:2]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    worded = {}
    for text_threshold in (0.02, 0.04, 0.06, 0.25):  # from most boxes worded to the default
        theirs = transformers_detections(reference, frame, box_threshold, text_threshold)
        ours = mm_detector.detect(frame, PROMPT, DetectionSettings(box_threshold, text_threshold, nms_iou=None))
        assert len(ours) == len(theirs["scores"]) >= 25
        assert torch.allclose(ours.boxes / scale, theirs["boxes"] / scale, atol=1e-3)
        assert torch.allclose(ours.scores, theirs["scores"], atol=1e-4)
        for label, expected, phrase in zip(ours.labels, theirs["labels"], ours.phrase_index.tolist(), strict=True):
            # where no token clears the text threshold transformers gives "", we give the box's phrase
            assert label == expected or (expected == "" and label == PHRASES[phrase])
        worded[text_threshold] = sum(map(bool, theirs["labels"]))
    # the labels were really compared: most boxes worded at the lowest threshold, a mix in between
    assert worded[0.02] >= len(ours) // 2 and 0 < worded[0.04] < len(ours)


def test_nms_and_max_detections_as_for_grounding_dino(mm_detector, reference, zidane):
    theirs = transformers_detections(reference, zidane, 0.0, 0.0)
    threshold = between(theirs["scores"], 60)
    theirs = transformers_detections(reference, zidane, threshold, 0.25)
    keep = nms(theirs["boxes"], theirs["scores"], 0.5)[:7]
    ours = mm_detector.detect(zidane, PROMPT, DetectionSettings(threshold, 0.25, nms_iou=0.5, max_detections=7))
    assert len(keep) == 7 < len(theirs["scores"])
    assert torch.allclose(ours.boxes, theirs["boxes"][keep], atol=0.05) and torch.allclose(ours.scores, theirs["scores"][keep], atol=1e-4)


def test_segment_command_with_a_folder(tmp_path, mm_folder, mm_detector, segmenter, sam_checkpoint, bus):
    image = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image)
    found = mm_detector.detect(bus, PROMPT, DetectionSettings(0.0, 0.0, nms_iou=None))
    threshold = float(found.scores[4])
    code = main(["segment", str(image), "--prompt", PROMPT, "--dino", str(mm_folder), "--sam", str(sam_checkpoint), "--out",
                 str(tmp_path / "out"), "--box-threshold", f"{threshold:.6f}", "--no-progress"])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    expected = GroundedSam(mm_detector, segmenter).segment(load_image_file(image), PROMPT, DetectionSettings(round(threshold, 6), 0.25))
    assert len(report[0]["objects"]) == len(expected) >= 1
    written = np.asarray(Image.open(tmp_path / "out" / "bus_mask.png")) > 0
    assert np.array_equal(written, expected.merged_masks()[0].numpy())


def test_wrong_files_say_what_they_are(tmp_path, mm_folder):
    with pytest.raises(ModelFileError, match="choose it in the Grounding DINO loader"):
        load_sam(mm_folder, "cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in mm_folder.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    tensors = load_file(broken / "model.safetensors")
    dropped = sorted(k for k in tensors if k.startswith("model.encoder.layers.1."))
    save_file({k: v for k, v in tensors.items() if k not in dropped}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match=r"incomplete MM-Grounding-DINO model: \d+ tensor\(s\) missing"):
        load_grounding_dino(broken, "cpu")
    sam_like = tmp_path / "sam-like"
    sam_like.mkdir()
    (sam_like / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    with pytest.raises(ModelFileError, match="choose it in the SAM loader"):
        load_grounding_dino(sam_like, "cpu")
