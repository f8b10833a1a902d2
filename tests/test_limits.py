"""Extreme inputs through the node: a 1x1 image, a 64-frame batch, an 8000x8000 image's memory peak."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from scenes import PROMPT

from grounded_sam.comfy.nodes import GroundingDinoSAMSegment, ObjectMasks
from grounded_sam.errors import InputError


def test_one_pixel_image_and_the_node_survives_bad_input(detector, segmenter):
    node = GroundingDinoSAMSegment()
    with pytest.raises(InputError):
        node.main(detector, segmenter, torch.full((1, 1, 1, 3), 0.5), "  ", 0.3)
    with pytest.raises(InputError):
        node.main(detector, segmenter, torch.full((1, 3, 8, 8), 0.5), PROMPT, 0.3)
    image, mask, found, detections, bboxes = node.main(detector, segmenter, torch.full((1, 1, 1, 3), 0.5), PROMPT, 0.0, max_detections=1)
    (objects,) = ObjectMasks().main(found)
    assert image.shape == (1, 1, 1, 3) and mask.shape == (1, 1, 1) and objects.shape == (1, 1, 1)
    assert len(json.loads(detections)) == 1
    (box,) = bboxes[0]  # clipped to the one pixel there is
    assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1 and box["y"] + box["height"] <= 1


def test_batch_of_64_frames_keeps_every_frame_in_order(detector, segmenter, batch_with_empty_middle):
    images, threshold = batch_with_empty_middle
    order = [i % 3 for i in range(64)]  # found, empty, found, found, empty, ...
    node = GroundingDinoSAMSegment()
    cap = 2  # objects per frame: what is checked is every frame's place, not how many objects it has
    singles = [node.main(detector, segmenter, images[i : i + 1], PROMPT, threshold, max_detections=cap)[1][0] for i in range(3)]
    assert singles[0].any() and not singles[1].any() and singles[2].any()
    _, masks, _, detections, bboxes = node.main(detector, segmenter, images[order], PROMPT, threshold, max_detections=cap)
    assert len(bboxes) == 64 and [len(frame) > 0 for frame in bboxes] == [bool(singles[s].any()) for s in order]
    assert masks.shape == (64, 640, 640)
    for position, source in enumerate(order):
        assert torch.equal(masks[position], singles[source]), f"frame {position}"
    assert {row["frame"] for row in json.loads(detections)} == {p for p, s in enumerate(order) if singles[s].any()}


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, torch
    from grounded_sam import load_grounding_dino, load_sam
    from grounded_sam.comfy.nodes import GroundingDinoSAMSegment, ObjectMasks
    dino, sam = load_grounding_dino(sys.argv[1]), load_sam(sys.argv[2])
    image = torch.rand((1, 8000, 8000, 3))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image_out, mask, found, _, _ = GroundingDinoSAMSegment().main(dino, sam, image, "person", 0.0, max_detections=2)
    out = (image_out, mask, *ObjectMasks().main(found))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"shapes": [list(t.shape) for t in out[:3]], "before_mib": before // 1024, "peak_mib": after // 1024}))
    """
)


@pytest.mark.system
def test_8000_pixel_image_stays_within_a_memory_budget(dino_checkpoint, sam_checkpoint):
    """Input 768 MiB (float32); outputs: image 768 MiB, merged mask 256 MiB, 2 object masks 512 MiB."""
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(dino_checkpoint), str(sam_checkpoint)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["shapes"] == [[1, 8000, 8000, 3], [1, 8000, 8000], [2, 8000, 8000]]
    growth = result["peak_mib"] - result["before_mib"]
    outputs = 768 + 256 + 512
    print(f"8000x8000: peak grew {growth} MiB over the loaded models and input (outputs alone {outputs} MiB)")
    assert growth < outputs + 1536, f"peak grew by {growth} MiB"
