"""The command line: model files in, mask PNGs and a detections JSON out."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from scenes import PROMPT, top_score

from grounded_sam import DetectionSettings, GroundedSam
from grounded_sam.cli import main
from grounded_sam.images import load_image_file


def test_segment_writes_masks_and_json(tmp_path, detector, segmenter, dino_checkpoint, sam_checkpoint, bus):
    image_path = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image_path)
    threshold = top_score(detector, bus) - 0.01  # a few objects, whatever the random weights find
    out = tmp_path / "out"
    code = main(
        ["segment", str(image_path), "--prompt", PROMPT, "--dino", str(dino_checkpoint), "--sam", str(sam_checkpoint),
         "--out", str(out), "--box-threshold", str(threshold), "--text-threshold", str(threshold - 0.02), "--per-object"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    objects = report[0]["objects"]
    assert len(objects) >= 1
    expected = GroundedSam(detector, segmenter).segment(load_image_file(image_path), PROMPT, DetectionSettings(threshold, threshold - 0.02))
    written = np.asarray(Image.open(out / "bus_mask.png")) > 0
    assert np.array_equal(written, expected.merged_masks()[0].numpy())
    first = np.asarray(Image.open(out / objects[0]["mask_file"])) > 0
    assert np.array_equal(first, expected.masks[0].numpy())
    assert objects[0]["box_xyxy"] == [round(v, 3) for v in expected.boxes[0].tolist()]


def test_missing_model_is_a_clear_error(tmp_path, capsys, bus):
    image_path = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image_path)
    code = main(["segment", str(image_path), "--prompt", "bus", "--dino", "GroundingDINO_SwinT_OGC (694MB)", "--sam", "x.pth",
                 "--out", str(tmp_path / "o"), "--models-dir", str(tmp_path / "models")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "groundingdino_swint_ogc.pth" in err and str(tmp_path / "models" / "grounding-dino") in err
    assert "huggingface.co/ShilongLiu/GroundingDINO" in err
