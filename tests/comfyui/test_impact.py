"""Our SEGS and text detectors inside a real Impact Pack (7.10.6), inside both real ComfyUI servers.

Every case runs Impact's own nodes on what our nodes give them and compares what comes back with
our library run in this process on the same checkpoint files and pixels. A test-only node
(impact_probe/) shows each SEGS value; the detailers' sampler needs a diffusion model, so
``FaceDetailer``'s own code path is run up to it and the SEGS it would sample are shown.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from conftest import DINO_FILE, ROOT, SAM_FILE, comfy_image, measure
from test_server import PROMPT, Graph, assert_success, iou, preview_text, saved_masks, segment_graph, threshold_for

from grounded_sam import DetectionSettings
from grounded_sam.comfy.segs import combined_mask, to_segs

pytestmark = pytest.mark.comfyui

TO_SEGS = "ToSEGS (segment anything)"
PROVIDER = "GroundingDinoDetectorProvider (segment anything)"
SEGS_JSON = "GroundedSamTestSegsJson"
FACE_DETAILER_SEGS = "GroundedSamTestFaceDetailerSegs"


def shown_segs(run, node: str) -> dict:
    return json.loads(preview_text(run, node))


def unpacked(row: dict) -> torch.Tensor:
    h, w = row["mask_shape"]
    bits = np.unpackbits(np.frombuffer(base64.b64decode(row["mask_bits"]), dtype=np.uint8))[: h * w]
    return torch.from_numpy(bits.reshape(h, w).astype(bool))


def assert_same_segs(got: dict, want, case: str, version: str) -> None:
    """A SEGS value shown by the probe against ours made by the library: same objects, regions and masks."""
    (h, w), segs = want
    assert got["size"] == [h, w]
    assert [r["label"] for r in got["segs"]] == [s.label for s in segs]
    ious = []
    for row, seg in zip(got["segs"], segs, strict=True):
        assert abs(row["confidence"] - float(seg.confidence)) < 1e-3
        assert np.abs(np.array(row["bbox"]) - np.asarray(seg.bbox)).max() / max(h, w) < 1e-3
        # a box within 1e-3 of ours may round to the next pixel: regions within one pixel
        assert np.abs(np.array(row["crop_region"]) - np.array(seg.crop_region)).max() <= 1, (row["crop_region"], seg.crop_region)
        mask = unpacked(row)
        want_mask = torch.from_numpy(seg.cropped_mask > 0.5)
        if mask.shape == want_mask.shape:
            ious.append(iou(mask, want_mask))
        else:  # a region one pixel off: compare the common part
            ch, cw = min(mask.shape[0], want_mask.shape[0]), min(mask.shape[1], want_mask.shape[1])
            ious.append(iou(mask[:ch, :cw], want_mask[:ch, :cw]))
        assert 0 < mask.sum() < mask.numel(), "a SEG's mask is neither empty nor its whole crop region"
    assert not ious or min(ious) >= 0.999, ious
    measure(version, case, segs=len(segs), min_mask_iou=round(min(ious), 5) if ious else None)


def text_threshold_for_labels(library, png, prompt: str, threshold: float) -> float:
    """A text threshold under which the objects' labels are single phrases, both phrases have objects, and
    the labels stay the same 0.01 either side (random weights score every word of the prompt alike)."""
    frame = comfy_image(png)
    steps = [round(0.5 + 0.01 * i, 2) for i in range(25)]
    runs: list[list[float]] = []
    last = None
    for value in steps:
        labels = library.pipeline.detect(frame, prompt, DetectionSettings(threshold, value)).labels
        usable = len(set(labels)) >= 2 and all(label in prompt.split(" . ") for label in labels)
        if usable and labels == last:
            runs[-1].append(value)
        elif usable:
            runs.append([value])
        last = labels if usable else None
    longest = max(runs, key=len, default=[])
    assert len(longest) >= 3, "no text threshold gives labels of single phrases from both phrases"
    return longest[len(longest) // 2]


@pytest.fixture(scope="session")
def segs_case(library, input_pngs):
    """The bus photo with the prompt's eight best objects, labelled by one phrase each, and the SEGS our library makes of them."""
    png = input_pngs["bus"]
    threshold = threshold_for(library, png, PROMPT, 8)
    text_threshold = text_threshold_for_labels(library, png, PROMPT, threshold)
    found = library.segment(png, PROMPT, threshold, text_threshold)
    image = comfy_image(png)
    options = {"crop_factor": 2.0, "dilation": 5, "drop_size": 10}
    segs = to_segs(found, image=image, **options)
    return {"png": png, "threshold": threshold, "text_threshold": text_threshold, "found": found, "options": options, "segs": segs}


def test_our_segs_in_impact_segs_nodes(impact_server, segs_case):
    """ToSEGS -> SEGSPreview, SEGS to MASK (combined), SEGS Filter (ordered) and SEGS Filter (label)."""
    (h, w), segs = segs_case["segs"]
    label = segs_case["found"].labels[-1]
    g, ids = segment_graph([segs_case["png"].name], PROMPT, segs_case["threshold"], text_threshold=segs_case["text_threshold"])
    to_segs_node = g.add(TO_SEGS, detections=[ids["segment"], 2], image=ids["image"], **segs_case["options"])
    shown = g.add(SEGS_JSON, segs=[to_segs_node, 0])
    preview = g.add("SEGSPreview", segs=[to_segs_node, 0], alpha_mode=True, min_alpha=0.2)
    combined = g.add("SegsToCombinedMask", segs=[to_segs_node, 0])
    save_combined = g.add("SaveImage", images=[g.add("MaskToImage", mask=[combined, 0]), 0], filename_prefix="impact_combined")
    ordered = g.add("ImpactSEGSOrderedFilter", segs=[to_segs_node, 0], target="confidence", order=True, take_start=0, take_count=2)
    shown_ordered = g.add(SEGS_JSON, segs=[ordered, 0])
    by_label = g.add("ImpactSEGSLabelFilter", segs=[to_segs_node, 0], preset="all", labels=label)
    shown_label = g.add(SEGS_JSON, segs=[by_label, 0])
    run = impact_server.run(g.nodes)
    assert_success(run)

    got = shown_segs(run, shown)
    assert_same_segs(got, segs_case["segs"], "ToSEGS", impact_server.version)
    assert {r["type"] for r in got["segs"]} == {"SEG"} and all(r["cropped_image_shape"] for r in got["segs"])
    previews = run.outputs(preview).get("images", [])
    assert len(previews) == len(segs), "SEGSPreview draws one image per SEG"
    # Impact's union of our cropped masks: every object's dilated mask, within its crop region
    want_union = torch.zeros((h, w), dtype=torch.bool)
    for seg in segs:
        x1, y1, x2, y2 = seg.crop_region
        want_union[y1:y2, x1:x2] |= torch.from_numpy(seg.cropped_mask > 0.5)
    assert iou(saved_masks(impact_server, run, save_combined)[0], want_union) >= 0.999
    best_two = sorted(segs, key=lambda s: -float(s.confidence))[:2]
    assert_same_segs(shown_segs(run, shown_ordered), ((h, w), best_two), "SEGS Filter (ordered)", impact_server.version)
    of_label = [s for s in segs if s.label == label]
    assert 0 < len(of_label) < len(segs)
    assert_same_segs(shown_segs(run, shown_label), ((h, w), of_label), "SEGS Filter (label)", impact_server.version)
    measure(impact_server.version, "ToSEGS into Impact's SEGS nodes", seconds=round(run.seconds, 1))


def provider_graph(g: Graph, prompt: str, text_threshold: float = 0.25) -> str:
    dino = g.add("GroundingDinoModelLoader (segment anything)", model_name=DINO_FILE)
    sam = g.add("SAMModelLoader (segment anything)", model_name=SAM_FILE)
    return g.add(PROVIDER, grounding_dino_model=[dino, 0], prompt=prompt, text_threshold=text_threshold, sam_model=[sam, 0])


def test_text_detectors_in_impact_detector_nodes(impact_server, library, segs_case):
    """Our BBOX_DETECTOR / SEGM_DETECTOR in Impact's BBOX Detector (SEGS), SEGM Detector (SEGS) and BBOX Detector (combined)."""
    png, threshold, text_threshold = segs_case["png"], segs_case["threshold"], segs_case["text_threshold"]
    image = comfy_image(png)
    boxes = library.pipeline.detect(image, PROMPT, DetectionSettings(threshold, text_threshold))
    found = segs_case["found"]
    label = found.labels[-1]
    g = Graph()
    provider = provider_graph(g, PROMPT, text_threshold)
    load = g.add("LoadImage", image=png.name)
    common = {"image": [load, 0], "threshold": threshold, "dilation": 4, "crop_factor": 3.0, "drop_size": 10}
    bbox_segs = g.add("BboxDetectorSEGS", bbox_detector=[provider, 0], labels="all", **common)
    segm_segs = g.add("SegmDetectorSEGS", segm_detector=[provider, 1], labels="all", **common)
    labelled = g.add("BboxDetectorSEGS", bbox_detector=[provider, 0], labels=label, **common)
    shown = {name: g.add(SEGS_JSON, segs=[node, 0]) for name, node in (("bbox", bbox_segs), ("segm", segm_segs), ("label", labelled))}
    combined = g.add("BboxDetectorCombined_v2", bbox_detector=[provider, 0], image=[load, 0], threshold=threshold, dilation=4)
    save_combined = g.add("SaveImage", images=[g.add("MaskToImage", mask=[combined, 0]), 0], filename_prefix="impact_bbox_combined")
    run = impact_server.run(g.nodes)
    assert_success(run)

    version = impact_server.version
    want_boxes = to_segs(boxes, 3.0, 4, 10, image, boxes_only=True)
    assert len(want_boxes[1]) >= 3
    assert_same_segs(shown_segs(run, shown["bbox"]), want_boxes, "BBOX Detector (SEGS)", version)
    assert_same_segs(shown_segs(run, shown["segm"]), to_segs(found, 3.0, 4, 10, image), "SEGM Detector (SEGS)", version)
    of_label = [s for s in want_boxes[1] if s.label == label]
    assert 0 < len(of_label) < len(want_boxes[1])
    assert_same_segs(shown_segs(run, shown["label"]), (want_boxes[0], of_label), "BBOX Detector (SEGS) labels", version)
    want_combined = combined_mask(boxes, 4, boxes_only=True) > 0
    assert iou(saved_masks(impact_server, run, save_combined)[0], want_combined) >= 0.999
    measure(version, "text detectors in Impact's detector nodes", seconds=round(run.seconds, 1))


def test_face_detailer_gets_the_same_segs(impact_server, library, input_pngs):
    """FaceDetailer's own path (setAux('face'), its box and mask detectors, Impact's SEGS-and-mask step) up to its sampler."""
    png = input_pngs["zidane"]
    threshold = threshold_for(library, png, "face", 3)
    image = comfy_image(png)
    settings = DetectionSettings(threshold, 0.25)
    boxes = library.pipeline.detect(image, "face", settings)
    found = library.pipeline.segment(image, "face", settings)
    assert len(boxes) >= 2
    g = Graph()
    provider = provider_graph(g, "")  # empty: FaceDetailer asks for "face"
    load = g.add("LoadImage", image=png.name)
    common = {"image": [load, 0], "bbox_detector": [provider, 0], "bbox_threshold": threshold, "bbox_dilation": 6, "bbox_crop_factor": 3.0,
              "drop_size": 10}  # fmt: skip
    boxes_only = g.add(FACE_DETAILER_SEGS, **common)
    with_masks = g.add(FACE_DETAILER_SEGS, segm_detector=[provider, 1], **common)
    run = impact_server.run(g.nodes)
    assert_success(run)

    version = impact_server.version
    want = to_segs(boxes, 3.0, 6, 10, image, boxes_only=True)
    got = json.loads(preview_text(run, boxes_only))
    assert got["sampler_calls"] == 1
    assert_same_segs(got["segs"], want, "FaceDetailer, box detector", version)
    # with the mask detector, Impact keeps each box SEG's pixels that the mask detector's SEGS hold
    (h, w), segm = to_segs(found, 3.0, 6, 10, image)
    held = torch.zeros((h, w), dtype=torch.bool)
    for seg in segm:
        x1, y1, x2, y2 = seg.crop_region
        held[y1:y2, x1:x2] |= torch.from_numpy(seg.cropped_mask > 0.5)
    anded = [
        seg._replace(cropped_mask=(seg.cropped_mask > 0.5) & held[seg.crop_region[1] : seg.crop_region[3], seg.crop_region[0] : seg.crop_region[2]].numpy())
        for seg in want[1]
    ]  # fmt: skip
    got = json.loads(preview_text(run, with_masks))
    assert got["sampler_calls"] == 1 and [r["type"] for r in got["segs"]["segs"]] == ["SEG"] * len(anded)
    anded = [s._replace(cropped_mask=s.cropped_mask.astype(np.float32)) for s in anded]
    assert_same_segs(got["segs"], ((h, w), anded), "FaceDetailer, box and mask detectors", version)
    measure(version, "FaceDetailer up to its sampler", seconds=round(run.seconds, 1), faces=len(boxes))


def test_impact_needs_stay_out_of_the_packs_environment(impact_server):
    """OpenCV, ultralytics and scikit-image are Impact's: the ComfyUI environment the other cases run in has none of them."""
    import subprocess

    base = impact_server.home / "venv" / "bin" / "python"
    for module in ("cv2", "ultralytics", "skimage"):
        found = subprocess.run([str(base), "-c", f"import {module}"], capture_output=True).returncode == 0
        layered = subprocess.run([str(impact_server.python), "-c", f"import {module}"], capture_output=True).returncode == 0
        assert layered and not found, f"{module}: in Impact's layer {layered}, in ComfyUI's own environment {found}"


FILE_CHOICES = {"ckpt_name", "image", "model_name", "file"}  # the files a user has: not the test server's


def workflow_problems(workflow: dict, object_info: dict) -> list[str]:
    """What a server would refuse in an API-format workflow: unknown nodes or inputs, missing inputs, links of the wrong type."""
    problems = []
    for node_id, node in workflow.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"{node_id}: no node {node['class_type']!r}")
            continue
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        problems += [f"{node_id}: {node['class_type']} has no input {name!r}" for name in node["inputs"] if name not in spec]
        problems += [f"{node_id}: {node['class_type']} lacks {name!r}" for name in info["input"].get("required", {}) if name not in node["inputs"]]
        for name, value in node["inputs"].items():
            if name not in spec:
                continue
            kind = spec[name][0]
            choices = kind if isinstance(kind, list) else (spec[name][1].get("options") if kind == "COMBO" and len(spec[name]) > 1 else None)
            if isinstance(value, list):
                source = workflow.get(value[0])
                outputs = object_info.get(source["class_type"], {}).get("output", []) if source else []
                given = outputs[value[1]] if value[1] < len(outputs) else None
                if given != kind and kind != "*" and not (choices is not None and given == "COMBO"):  # "*" takes any type
                    problems.append(f"{node_id}.{name}: linked to {given!r}, takes {kind!r}")
            elif choices is not None and name not in FILE_CHOICES and value not in choices:
                problems.append(f"{node_id}.{name}: {value!r} is not one of its choices")
    return problems


def test_docs_workflows_fit_the_servers_nodes(impact_server):
    """The README's example workflows (docs/workflow-*.json) name real nodes, inputs and choices, with links of the right types."""
    info = impact_server.object_info()
    docs = sorted((ROOT / "docs").glob("workflow-*.json"))
    assert docs, "the README's example workflows are in docs/"
    for path in docs:
        assert workflow_problems(json.loads(path.read_text()), info) == [], path.name
    broken = json.loads(docs[0].read_text())
    first = next(iter(broken))
    broken[first]["inputs"]["no_such_input"] = 1
    assert workflow_problems(broken, info), "the check finds a wrong input"
