"""Point prompts: parsing, which object a click refines, and parity with Meta's predictors on the same weights.

Meta's ``predict(point_coords, point_labels, box, multimask_output)`` is the reference for every SAM
family: one click alone takes the best of the three masks by predicted IoU
(``multimask_output=True``), anything more the single mask. Masks are compared by IoU (>= 0.999),
the predicted IoU (the decoder's own score) within 1e-3, and every reference mask must be neither
empty nor the whole frame.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_sam_parity import iou

from grounded_sam import load_sam
from grounded_sam.clicks import Clicks, owners, points_from_json, points_from_text
from grounded_sam.errors import InputError

# --- parsing and ownership (unit) -------------------------------------------------------------


def test_points_in_cores_json_and_the_clis_text():
    assert points_from_json('[{"x": 10, "y": 20}, {"x": 5.5, "y": 0}]') == [(10.0, 20.0), (5.5, 0.0)]
    assert points_from_json('{"x": 1, "y": 2}') == [(1.0, 2.0)]
    assert points_from_json("") == [] and points_from_json(None) == [] and points_from_json("[]") == []
    assert points_from_text("120,80; 300,210") == [(120.0, 80.0), (300.0, 210.0)]
    with pytest.raises(InputError, match="not JSON"):
        points_from_json("[{x: 1}]")
    with pytest.raises(InputError, match=r"list of points like"):
        points_from_json('[[1, 2]]')
    with pytest.raises(InputError, match="must be a number"):
        points_from_json('[{"x": "left", "y": 2}]')
    with pytest.raises(InputError, match='"x,y;x,y"'):
        points_from_text("120;80")
    with pytest.raises(InputError, match=r"\(640, 5\) is outside the 640x480 image"):
        Clicks.of([(10, 10), (640, 5)]).check_inside((480, 640))


def test_each_click_belongs_to_the_smallest_box_that_holds_it():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [40.0, 40.0, 60.0, 60.0], [200.0, 0.0, 300.0, 50.0]])
    clicks = Clicks.of([(50, 50), (10, 90), (250, 10)], [(500, 500)])
    assert owners(clicks, boxes).tolist() == [1, 0, 2, -1]
    assert owners(clicks, boxes[:0]).tolist() == [-1] * 4


# --- parity with Meta's predictors ---------------------------------------------------------------

# Prompts on the 810x1080 bus photo: one click; two on and one off the object; a box with a click on and one off.
ONE = ([(330.0, 560.0)], [])
SEVERAL = ([(330.0, 560.0), (420.0, 700.0)], [(700.0, 300.0)])
BOX = torch.tensor([200.0, 380.0, 620.0, 900.0])
BOX_AND_CLICKS = ([(410.0, 640.0)], [(560.0, 420.0)])


def meta_predict(predictor, frame: torch.Tensor, prompt, box: torch.Tensor | None, **extra) -> tuple[np.ndarray, float]:
    """Meta's documented call; one click alone: the best of the three masks, as ours."""
    positive, negative = prompt
    clicks = Clicks.of(positive, negative)
    multimask = box is None and len(clicks) == 1
    masks, scores, _ = predictor.predict(
        point_coords=clicks.coords.numpy(), point_labels=clicks.labels().numpy(), box=None if box is None else box.numpy(),
        multimask_output=multimask, **extra,
    )  # fmt: skip
    best = int(np.argmax(scores))
    return masks[best] > 0, float(scores[best])


def assert_clicks_match(ours, frame: torch.Tensor, predict) -> dict:
    """Each prompt through ``ours.masks_for_clicks`` (all at once, and the box case) against ``predict(prompt, box)``."""
    embedding = ours.embed(frame)
    prompts = [ONE, SEVERAL]
    masks, scores = ours.masks_for_clicks(embedding, [Clicks.of(*p) for p in prompts])
    boxed, boxed_score = ours.masks_for_clicks(embedding, [Clicks.of(*BOX_AND_CLICKS)], BOX[None])
    got = [*zip(masks, scores, strict=True), (boxed[0], boxed_score[0])]
    want = [predict(p, None) for p in prompts] + [predict(BOX_AND_CLICKS, BOX)]
    ious = []
    for (mask, score), (ref_mask, ref_score) in zip(got, want, strict=True):
        ref = torch.from_numpy(ref_mask)
        assert ref.any() and not ref.all(), "a degenerate reference mask proves nothing"
        ious.append(iou(mask, ref))
        assert abs(float(score) - ref_score) < 1e-3, (float(score), ref_score)
    assert min(ious) >= 0.999, ious
    return {"ious": ious}


@pytest.mark.parity
@pytest.mark.quick
def test_sam_clicks_match_meta(reference_sam, segmenter, bus):
    from reference_models import meta_predictor

    predictor = meta_predictor(reference_sam)
    predictor.set_image(bus.numpy())
    assert_clicks_match(segmenter, bus, lambda p, box: meta_predict(predictor, bus, p, box))


@pytest.mark.parity
def test_hq_sam_clicks_match_reference(models_dir, bus):
    pytest.importorskip("segment_anything_hq", reason="segment-anything-hq is the HQ-SAM reference")
    from reference_models import meta_predictor, meta_sam

    model = meta_sam(hq=True, seed=1)
    path = models_dir / "sam_hq_clicks.pth"
    torch.save(model.state_dict(), path)
    predictor = meta_predictor(model, hq=True)
    predictor.set_image(bus.numpy())
    assert_clicks_match(load_sam(path), bus, lambda p, box: meta_predict(predictor, bus, p, box, hq_token_only=False))


@pytest.mark.parity
def test_mobile_sam_clicks_match_reference(models_dir, bus):
    pytest.importorskip("mobile_sam", reason="mobilesam-mirror packages the MobileSAM reference")
    from reference_models import meta_predictor, meta_sam

    model = meta_sam(kind="tiny_vit", seed=2)
    path = models_dir / "mobile_sam_clicks.pt"
    torch.save(model.state_dict(), path)
    predictor = meta_predictor(model, "tiny_vit")
    predictor.set_image(bus.numpy())
    assert_clicks_match(load_sam(path), bus, lambda p, box: meta_predict(predictor, bus, p, box))


@pytest.mark.parity
def test_sam2_clicks_match_meta(sam2_tiny, bus):
    pytest.importorskip("sam2", reason="Meta's sam2 package is the reference")
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, path = sam2_tiny
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(bus.numpy())
    assert_clicks_match(load_sam(path, "cpu"), bus, lambda p, box: meta_predict(predictor, bus, p, box))


@pytest.mark.parity
def test_sam3_tracker_head_clicks_match_meta(sam3_release, bus):
    from reference_models import meta_sam3_on_cpu
    from sam3.model.sam3_image_processor import Sam3Processor

    model, path = sam3_release
    with meta_sam3_on_cpu(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = Sam3Processor(model, device="cpu")
        state = processor.set_image(Image.fromarray(bus.numpy()))

        def predict(prompt, box):
            positive, negative = prompt
            clicks = Clicks.of(positive, negative)
            masks, scores, _ = model.predict_inst(
                state, point_coords=clicks.coords.numpy(), point_labels=clicks.labels().numpy(),
                box=None if box is None else box.numpy(), multimask_output=box is None and len(clicks) == 1,
            )  # fmt: skip
            best = int(np.argmax(scores))
            return np.asarray(masks[best]) > 0, float(scores[best])

        assert_clicks_match(load_sam(path, "cpu"), bus, predict)


# --- clicks in the pipeline, the nodes and the CLI (unit) ------------------------------------------


@pytest.fixture(scope="module")
def clicked_case(detector, segmenter, bus):
    """The bus photo, a threshold keeping a few objects, one click in the first object's box and one in no box."""
    from scenes import PROMPT

    from grounded_sam import DetectionSettings, GroundedSam

    pipeline = GroundedSam(detector, segmenter, "fp32")
    settings = DetectionSettings(0.0, 0.0, max_detections=3)
    plain = pipeline.segment(bus, PROMPT, settings)
    x0, y0, x1, y1 = plain.boxes[0].tolist()
    h, w = plain.image_size
    inside = ((x0 + x1) / 2, (y0 + y1) / 2)
    others = plain.boxes[1:]
    loose = next(
        (x, y) for x in range(5, w, 40) for y in range(5, h, 40)
        if not (x0 <= x <= x1 and y0 <= y <= y1) and not ((others[:, 0] <= x) & (x <= others[:, 2]) & (others[:, 1] <= y) & (y <= others[:, 3])).any()
    )  # fmt: skip
    return pipeline, settings, plain, inside, (float(loose[0]), float(loose[1]))


def test_clicks_refine_their_object_and_make_one_of_their_own(clicked_case, segmenter, bus):
    from scenes import PROMPT

    from grounded_sam.click_refinement import CLICKED

    pipeline, settings, plain, inside, loose = clicked_case
    clicks = Clicks.of([inside, loose], [])
    found = pipeline.segment(bus, PROMPT, settings, clicks=clicks)
    assert len(found) == len(plain) + 1 and found.labels[-1] == CLICKED and found.labels[:-1] == plain.labels
    embedding = segmenter.embed(bus)
    refined, _ = segmenter.masks_for_clicks(embedding, [Clicks.of([inside])], plain.boxes[:1])
    alone, score = segmenter.masks_for_clicks(embedding, [Clicks.of([loose])])
    assert torch.equal(found.masks[0], refined[0]) and not torch.equal(found.masks[0], plain.masks[0])  # the click changed it
    assert torch.equal(found.masks[1:-1], plain.masks[1:])  # the others are as found
    assert torch.equal(found.masks[-1], alone[0]) and found.masks[-1].any()
    assert abs(float(found.scores[-1]) - float(score.clamp(0, 1)[0])) < 1e-6
    ys, xs = found.masks[-1].nonzero().unbind(1)
    assert found.boxes[-1].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # a negative click in no box makes nothing by itself
    assert len(pipeline.segment(bus, PROMPT, settings, clicks=Clicks.of([], [loose]))) == len(plain)


def test_clicks_alone_and_on_boxes(segmenter, bus, clicked_case):
    from grounded_sam.click_refinement import segment_clicks

    _, _, plain, inside, loose = clicked_case
    embedding = segmenter.embed(bus)
    found = segment_clicks(segmenter, bus, Clicks.of([loose, inside], [(5.0, 5.0)]))
    alone, _ = segmenter.masks_for_clicks(embedding, [Clicks.of([loose, inside], [(5.0, 5.0)])])
    assert len(found) == 1 and torch.equal(found.masks[0], alone[0])
    boxes = plain.boxes[:2]
    found = segment_clicks(segmenter, torch.stack([bus, bus]), Clicks.of([inside]), [boxes])
    assert found.num_frames == 2 and found.labels == ("box", "box") * 2
    refined, _ = segmenter.masks_for_clicks(embedding, [Clicks.of([inside])], boxes[:1])
    assert torch.equal(found.masks[0], refined[0]) and torch.equal(found.masks[1], segmenter.masks_for_boxes(embedding, boxes[1:])[0])
    with pytest.raises(InputError, match="nothing to segment"):
        segment_clicks(segmenter, bus, Clicks.of([], [loose]))
    with pytest.raises(InputError, match="outside the"):
        segment_clicks(segmenter, bus, Clicks.of([(5000.0, 1.0)]))


def test_points_node_and_segment_node_take_cores_points(detector, segmenter, bus, clicked_case):
    import json

    from scenes import PROMPT

    from grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, GroundingDinoSAMSegment

    pipeline, settings, plain, inside, loose = clicked_case
    image = bus.float()[None] / 255
    positive = json.dumps([{"x": inside[0], "y": inside[1]}, {"x": loose[0], "y": loose[1]}])
    node = NODE_CLASS_MAPPINGS["PointsSegment (segment anything)"]()
    mask, objects = node.main(segmenter, image, positive, "")
    want = pipeline.segment(image, PROMPT, settings, clicks=Clicks.of([inside, loose]))
    alone = segmenter.masks_for_clicks(segmenter.embed(bus), [Clicks.of([inside, loose])])[0]
    assert mask.shape == (1, *bus.shape[:2]) and torch.equal(mask[0] > 0, alone[0]) and len(objects.detections) == 1
    core_boxes = [[{"x": b[0], "y": b[1], "width": b[2] - b[0], "height": b[3] - b[1]} for b in plain.boxes[:2].tolist()]]
    mask, objects = node.main(segmenter, image, positive, "", bboxes=core_boxes)
    assert objects.detections.labels == ("box", "box", "clicked")
    with pytest.raises(InputError, match="nothing to segment"):
        node.main(segmenter, image, "", "")
    with pytest.raises(InputError, match="positive_coords is not JSON"):
        node.main(segmenter, image, "[{x: 1}]", "")
    with pytest.raises(InputError, match="bboxes must be ComfyUI boxes"):
        node.main(segmenter, image, positive, "", bboxes=[[1, 2, 3, 4]])
    # the segment node's appended inputs: the same clicks, the same result as the library
    _, merged, found, _, _ = GroundingDinoSAMSegment().main(
        detector, segmenter, image, PROMPT, 0.0, 0.0, max_detections=3, positive_coords=positive, negative_coords=""
    )
    assert torch.equal(merged[0] > 0, want.merged_masks()[0]) and found.detections.labels == want.labels
    with pytest.raises(InputError, match="outside the"):
        GroundingDinoSAMSegment().main(detector, segmenter, image, PROMPT, 0.3, positive_coords='[{"x": 99999, "y": 1}]')


def test_cli_points(tmp_path, capsys, dino_checkpoint, sam_checkpoint, bus, clicked_case):
    import json

    from scenes import PROMPT

    from grounded_sam.cli import main

    pipeline, settings, plain, inside, loose = clicked_case
    image = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image)
    args = ["segment", str(image), "--prompt", PROMPT, "--dino", str(dino_checkpoint), "--sam", str(sam_checkpoint),
            "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "3"]  # fmt: skip
    code = main([*args, "--out", str(tmp_path / "out"), "--points", f"{inside[0]},{inside[1]};{loose[0]},{loose[1]}"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    want = pipeline.segment(bus, PROMPT, settings, clicks=Clicks.of([inside, loose]))
    assert [o["label"] for o in report[0]["objects"]] == list(want.labels)
    written = np.asarray(Image.open(tmp_path / "out" / "bus_mask.png")) > 0
    assert np.array_equal(written, want.merged_masks()[0].numpy())
    assert main([*args, "--out", str(tmp_path / "o2"), "--points", "12;3"]) == 2
    assert '"x,y;x,y"' in capsys.readouterr().err
