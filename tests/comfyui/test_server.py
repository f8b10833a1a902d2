"""The pack inside real ComfyUI servers (0.3.75 and 0.33.0), driven only over HTTP and the websocket.

Every case asserts on what comes back (PNGs, detections, errors, messages) against our library
run in this process on the same checkpoint files and the same decoded pixels.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from client import ComfyServer, RejectedPrompt, Run
from conftest import (
    DINO_FILE,
    EDGETAM_FOLDER,
    MM_FOLDER,
    PACK_FOLDER,
    SAM2_FILE,
    SAM2_VIDEO_FOLDER,
    SAM3_FILE,
    SAM_FILE,
    WRONG_FILE,
    comfy_image,
    measure,
)
from PIL import Image

from grounded_sam.media.images import to_uint8_frames
from grounded_sam.runtime.run_hooks import DETECTION_SHARE, ENCODER_COST_IN_BOXES, STEPS_PER_FRAME

pytestmark = pytest.mark.comfyui

SEGMENT = "GroundingDinoSAMSegment (segment anything)"
PREVIEW = "PreviewDetections (segment anything)"
PICK = "PickObjects (segment anything)"
# DrawBBoxes (ComfyUI 0.33's core node) draws every box in one of these colours
CORE_BOX_COLOURS = {(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 165, 0), (128, 0, 128), (0, 255, 255), (255, 20, 147), (100, 149, 237)}
PROMPT = "person . bus"
SECOND_PROMPT = "a window . the wheel"
WORKFLOWS = Path(__file__).resolve().parent / "workflows"
MEASURED_MAIN_SECONDS: dict[str, float] = {}  # version -> the main workflow's first run


# --- building API prompts -------------------------------------------------------------------


class Graph:
    """An API-format prompt: ``{id: {"class_type", "inputs"}}``; ``add`` returns the node id."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node = str(len(self.nodes) + 1)
        self.nodes[node] = {"class_type": class_type, "inputs": inputs}
        return node


def segment_graph(
    images: list[str], prompt: str, threshold: float, sam: str = SAM_FILE, dino: str = DINO_FILE, **options
) -> tuple[Graph, dict[str, str]]:
    """LoadImage (batched with ImageBatch when several) -> both loaders -> segment; returns the graph and node ids."""
    g = Graph()
    ids = {"sam": g.add("SAMModelLoader (segment anything)", model_name=sam)}
    ids["dino"] = g.add("GroundingDinoModelLoader (segment anything)", model_name=dino)
    loads = [g.add("LoadImage", image=name) for name in images]
    image = [loads[0], 0]
    for other in loads[1:]:
        image = [g.add("ImageBatch", image1=image, image2=[other, 0]), 0]
    ids["segment"] = g.add(
        SEGMENT, sam_model=[ids["sam"], 0], grounding_dino_model=[ids["dino"], 0], image=image, prompt=prompt, threshold=threshold, **options
    )
    ids["image"] = image  # the socket of the (batched) frames
    return g, ids


def save_outputs(g: Graph, ids: dict[str, str], prefix: str, image=True, mask=True, objects=False, json_out=False, empty=False):
    seg = ids["segment"]
    if image:
        ids["save_image"] = g.add("SaveImage", images=[seg, 0], filename_prefix=f"{prefix}_image")
    if mask:
        ids["save_mask"] = g.add("SaveImage", images=[g.add("MaskToImage", mask=[seg, 1]), 0], filename_prefix=f"{prefix}_mask")
    if objects:
        masks = g.add("ObjectMasks (segment anything)", detections=[seg, 2])
        ids["save_objects"] = g.add("SaveImage", images=[g.add("MaskToImage", mask=[masks, 0]), 0], filename_prefix=f"{prefix}_objects")
    if json_out:
        ids["json"] = g.add("PreviewAny", source=[seg, 3])
    if empty:
        ids["empty"] = g.add("PreviewAny", source=[g.add("IsMaskEmpty", mask=[seg, 1]), 0])
    return ids


# --- reading results --------------------------------------------------------------------------


def saved_pngs(server: ComfyServer, run: Run, node: str) -> list[np.ndarray]:
    images = run.outputs(node).get("images", [])
    assert images, f"node {node} saved nothing: {run.history.get('outputs')}"
    return [np.asarray(Image.open(server.output_dir / i["subfolder"] / i["filename"])) for i in images]


def saved_masks(server: ComfyServer, run: Run, node: str) -> torch.Tensor:
    pngs = saved_pngs(server, run, node)
    assert all((p == 0).any() or (p == 255).any() for p in pngs)
    return torch.stack([torch.from_numpy(p[..., 0] > 127) for p in pngs])


def preview_text(run: Run, node: str) -> str:
    return "".join(run.outputs(node)["text"])


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def assert_same_detections(rows: list[dict], expected, image_size: tuple[int, int]) -> None:
    """Server rows against a library result: labels equal, boxes within 1e-3 (normalised), areas close."""
    h, w = image_size
    mine = expected.to_json()
    assert [r["label"] for r in rows] == [r["label"] for r in mine]
    assert [r["frame"] for r in rows] == [r["frame"] for r in mine]
    for got, want in zip(rows, mine, strict=True):
        scale = np.array([w, h, w, h])
        assert np.abs(np.array(got["box_xyxy"]) / scale - np.array(want["box_xyxy"]) / scale).max() < 1e-3
        assert abs(got["score"] - want["score"]) < 1e-3


def throttles_progress(server: ComfyServer) -> bool:
    """ComfyUI 0.33's ProgressBar sends at most one update per 100 ms (comfy/utils.py), dropping the steps between."""
    return server.version != "0.3.75"


def assert_success(run: Run) -> None:
    assert run.status == "success", f"{run.status}: {json.dumps(run.error)[:3000]}"


def threshold_for(library, png: Path, prompt: str, count: int) -> float:
    """A box threshold in the middle of a clear gap that keeps the ``count`` best queries (before NMS)."""
    scores = library.scores(png, prompt).tolist()
    for k in range(count, len(scores) - 1):
        if scores[k - 1] - scores[k] > 2e-4:  # far beyond the float noise between two processes
            return round((scores[k - 1] + scores[k]) / 2, 5)
    raise AssertionError("no gap in the scores to place a threshold in")


@pytest.fixture(scope="session")
def main_case(library, input_pngs):
    png = input_pngs["bus"]
    threshold = threshold_for(library, png, PROMPT, 6)
    return {"png": png, "threshold": threshold, "expected": library.segment(png, PROMPT, threshold)}


def run_main(server: ComfyServer, main_case, prefix: str, **outputs) -> tuple[Run, dict[str, str]]:
    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"])
    ids = save_outputs(g, ids, prefix, **outputs)
    return server.run(g.nodes), ids


# --- the cases ----------------------------------------------------------------------------------


def test_nodes_register_with_the_seed_sockets(server):
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_text())
    imported = re.search(rf"([\d.]+) seconds( \(IMPORT FAILED\))?: \S*custom_nodes/{PACK_FOLDER}$", log, re.MULTILINE)
    assert imported and not imported.group(2), "the pack must be in ComfyUI's import report, imported"
    measure(server.version, "pack import", seconds=float(imported.group(1)))
    info = server.object_info()
    segment = info[SEGMENT]
    assert segment["input_order"]["required"] == ["sam_model", "grounding_dino_model", "image", "prompt", "threshold"]
    assert segment["output"][:2] == ["IMAGE", "MASK"] and segment["category"] == "segment_anything"
    for node in ("SAMModelLoader (segment anything)", "GroundingDinoModelLoader (segment anything)", "InvertMask (segment anything)", "IsMaskEmpty"):
        assert node in info
    assert segment["output"] == ["IMAGE", "MASK", "GROUNDED_SAM_DETECTIONS", "STRING", "BOUNDING_BOX"]
    optional = ["text_threshold", "max_detections", "precision", "exclude", "positive_coords", "negative_coords"]
    assert segment["input_order"]["optional"] == optional  # appended: old widget order holds
    assert info[PREVIEW]["output"] == ["IMAGE"] and info[PICK]["output"] == ["MASK", "MASK", "GROUNDED_SAM_DETECTIONS", "BOUNDING_BOX"]
    sam_choices = info["SAMModelLoader (segment anything)"]["input"]["required"]["model_name"][0]
    dino_choices = info["GroundingDinoModelLoader (segment anything)"]["input"]["required"]["model_name"][0]
    # files and model folders on disk first (SAM 3's file is listed by both loaders)
    assert sam_choices[:5] == sorted([SAM_FILE, SAM2_FILE, SAM2_VIDEO_FOLDER, EDGETAM_FOLDER, SAM3_FILE]) and "sam_vit_b (375MB)" in sam_choices
    assert "edgetam (EdgeTAM, 14M parameters)" in sam_choices  # the release file, listed to fetch
    assert DINO_FILE in dino_choices and WRONG_FILE in dino_choices and "GroundingDINO_SwinT_OGC (694MB)" in dino_choices
    assert SAM3_FILE in dino_choices


@pytest.mark.quick
def test_main_workflow_matches_the_library(server, main_case):
    """LoadImage -> loaders -> segment -> SaveImage (IMAGE) and MaskToImage -> SaveImage (MASK)."""
    log_before = server.log_text()
    run, ids = run_main(server, main_case, "main", json_out=True)
    assert_success(run)
    expected = main_case["expected"]
    assert len(expected) > 0
    mask = saved_masks(server, run, ids["save_mask"])
    want = expected.merged_masks()
    assert mask.shape == want.shape and iou(mask, want) >= 0.999
    (picture,) = saved_pngs(server, run, ids["save_image"])
    frame = np.asarray(Image.open(main_case["png"]).convert("RGB"))
    agree = (mask[0] == want[0]).numpy()
    assert np.array_equal(picture[agree], (frame * want[0].numpy()[..., None])[agree])  # the input, black outside the mask
    assert_same_detections(json.loads(preview_text(run, ids["json"])), expected, tuple(frame.shape[:2]))
    # models went through ComfyUI's model management: both loaded by it for this run
    new_log = server.log_text()[len(log_before) :]
    assert new_log.count("Requested to load _PatchedModel") >= 1 and "loaded completely" in new_log
    progress = run.progress(ids["segment"])
    values = [v for v, _ in progress]
    assert values == sorted(values) and {m for _, m in progress} == {STEPS_PER_FRAME}
    inside = [v for v in values if 0 < v < STEPS_PER_FRAME]
    assert len(inside) >= 10, f"the bar must move through the frame, got {values}"
    assert any(v < DETECTION_SHARE * STEPS_PER_FRAME for v in inside) and any(v > DETECTION_SHARE * STEPS_PER_FRAME for v in inside)
    MEASURED_MAIN_SECONDS[server.version] = round(run.seconds, 1)
    measure(server.version, "main workflow", seconds=round(run.seconds, 1), objects=len(expected), mask_iou=round(iou(mask, want), 5),
            progress_messages_one_frame=len(progress), distinct_progress_values=len(set(values)))  # fmt: skip


def test_all_four_outputs_wired(server, main_case):
    run, ids = run_main(server, main_case, "all4", objects=True, json_out=True)
    assert_success(run)
    rows = json.loads(preview_text(run, ids["json"]))
    objects = saved_masks(server, run, ids["save_objects"])
    merged = saved_masks(server, run, ids["save_mask"])
    expected = main_case["expected"]
    assert len(rows) == len(expected) == objects.shape[0] > 0
    assert [int(m.sum()) for m in objects] == [r["mask_area"] for r in rows]
    assert torch.equal(objects.any(0), merged[0])
    for got, want in zip(objects, expected.masks, strict=True):
        assert iou(got, want) >= 0.999


def test_nothing_found(server, main_case, library):
    assert float(library.scores(main_case["png"], PROMPT)[0]) < 0.99  # so 0.99 really finds nothing
    g, ids = segment_graph(["bus.png"], PROMPT, 0.99)
    ids = save_outputs(g, ids, "nothing", image=False, objects=True, json_out=True, empty=True)
    run = server.run(g.nodes)
    assert_success(run)
    assert not saved_masks(server, run, ids["save_mask"]).any()
    objects = saved_masks(server, run, ids["save_objects"])
    assert objects.shape[0] == 1 and not objects.any()  # ComfyUI has no empty batch: one all-zero mask
    assert preview_text(run, ids["empty"]) == "1"
    assert json.loads(preview_text(run, ids["json"])) == []


def test_batch_of_two_frames_keeps_order(server, library, input_pngs):
    first, second = input_pngs["picture1"], input_pngs["picture2"]
    assert Image.open(first).size == Image.open(second).size  # ImageBatch would resize otherwise
    threshold = max(threshold_for(library, png, PROMPT, 3) for png in (first, second))  # a few boxes in each frame
    g, ids = segment_graph(["picture1.png", "picture2.png"], PROMPT, threshold)
    ids = save_outputs(g, ids, "batch", image=False, json_out=True)
    run = server.run(g.nodes)
    assert_success(run)
    masks = saved_masks(server, run, ids["save_mask"])
    alone = [library.segment(png, PROMPT, threshold).merged_masks()[0] for png in (first, second)]
    assert masks.shape[0] == 2
    assert not torch.equal(alone[0], alone[1])  # different frames, so order is visible
    for got, want in zip(masks, alone, strict=True):
        assert iou(got, want) >= 0.999
    rows = json.loads(preview_text(run, ids["json"]))
    assert [r["frame"] for r in rows] == sorted(r["frame"] for r in rows)
    values = [v for v, _ in run.progress(ids["segment"])]
    assert values == sorted(values) and values[-1] == 2 * STEPS_PER_FRAME
    assert [v for v in values if 0 < v <= STEPS_PER_FRAME] and [v for v in values if STEPS_PER_FRAME < v < 2 * STEPS_PER_FRAME]
    if not throttles_progress(server):  # 0.33 sends at most one progress message per 100 ms: a frame's last step may be dropped
        assert STEPS_PER_FRAME in values  # each frame ends on its own step
    measure(server.version, "batch of two", seconds=round(run.seconds, 1), objects=len(rows), progress_messages=len(values))


def test_second_prompt_reuses_the_caches(server, main_case, library):
    png, threshold = main_case["png"], main_case["threshold"]
    g, ids = segment_graph(["bus.png"], SECOND_PROMPT, threshold)
    ids = save_outputs(g, ids, "second_prompt", image=False, json_out=True)
    second = server.run(g.nodes)
    assert_success(second)
    expected = library.segment(png, SECOND_PROMPT, threshold)
    assert len(expected) > 0
    # SAM's image embedding came from the cache: no encoder block ran (no progress inside the encoder's share)
    encoded = int(DETECTION_SHARE * STEPS_PER_FRAME + (1 - DETECTION_SHARE) * STEPS_PER_FRAME * ENCODER_COST_IN_BOXES / (ENCODER_COST_IN_BOXES + len(expected)))
    values = [v for v, _ in second.progress(ids["segment"])]
    assert not [v for v in values if DETECTION_SHARE * STEPS_PER_FRAME < v < encoded], values
    mask = saved_masks(server, second, ids["save_mask"])
    assert iou(mask, expected.merged_masks()) >= 0.999
    assert_same_detections(json.loads(preview_text(second, ids["json"])), expected, tuple(mask.shape[1:]))
    measure(server.version, "second prompt", seconds=round(second.seconds, 1), first_prompt_seconds=MEASURED_MAIN_SECONDS.get(server.version))


def convert_ui_workflow(workflow: dict, object_info: dict) -> dict:
    """A saved UI workflow (widgets by position) as an API prompt, by /object_info's input order."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted or bypassed
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for section in ("required", "optional"):
            for name in info["input_order"].get(section, []):
                if name in linked:
                    link = linked[name]
                    inputs[name] = [str(link[1]), link[2]]
                    continue
                spec = info["input"][section][name]
                is_widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
                if is_widget and values:
                    inputs[name] = values.pop(0)
                    if name in ("seed", "noise_seed") and values:
                        values.pop(0)  # control_after_generate
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_legacy_ui_workflow_runs(server, library, input_pngs):
    workflow = json.loads((WORKFLOWS / "legacy_segment_anything.json").read_text())
    prompt = convert_ui_workflow(workflow, server.object_info())
    segment = prompt["4"]["inputs"]
    assert segment["prompt"] == "person . bus" and segment["threshold"] == 0.7  # ["person . bus", 0.7] by position
    assert prompt["1"]["inputs"]["model_name"] == "sam_vit_b (375MB)"
    run = server.run(prompt)
    assert_success(run)
    mask = saved_masks(server, run, "7")
    expected = library.segment(input_pngs["bus"], "person . bus", 0.7).merged_masks()
    assert iou(mask, expected) >= 0.999
    assert run.outputs("5").get("images")  # the PreviewImage of the segmented picture


@pytest.mark.parametrize(
    "case",
    ["empty prompt", "threshold out of range", "unknown model", "SAM file in the Grounding DINO loader"],
)
def test_bad_input_is_explained_and_the_next_run_works(server, main_case, case):
    threshold = main_case["threshold"]
    if case == "empty prompt":
        g, ids = segment_graph(["bus.png"], "  .  ", threshold)
    elif case == "threshold out of range":
        g, ids = segment_graph(["bus.png"], PROMPT, 1.5)
    elif case == "unknown model":
        g, ids = segment_graph(["bus.png"], PROMPT, threshold, sam="sam_vit_q.pth")
    else:
        g, ids = segment_graph(["bus.png"], PROMPT, threshold, dino=WRONG_FILE)
    save_outputs(g, ids, "bad", image=False)
    if case in ("threshold out of range", "unknown model"):
        with pytest.raises(RejectedPrompt) as refused:  # ComfyUI's own validation: HTTP 400 with node_errors
            server.queue(g.nodes)
        errors = refused.value.body["node_errors"]
        text = json.dumps(errors)
        assert ("threshold" in text and "1.5" in text) if case == "threshold out of range" else "sam_vit_q.pth" in text
        message = text
    else:
        run = server.run(g.nodes)
        assert run.status == "error"
        message = run.error["exception_message"]
        if case == "empty prompt":
            assert "the prompt is empty: name what to segment" in message
        else:
            assert WRONG_FILE in message and "choose it in the SAM loader" in message
    measure(server.version, f"bad input: {case}", error=message[:300])
    after, ids = run_main(server, main_case, "after_bad", image=False)
    assert_success(after)
    assert iou(saved_masks(server, after, ids["save_mask"]), main_case["expected"].merged_masks()) >= 0.999


def test_free_then_run(server, main_case):
    run_main(server, main_case, "before_free", image=False)
    before = server.log_text()
    server.free()
    time.sleep(2)  # ComfyUI applies /free between prompts, in its worker loop
    run, ids = run_main(server, main_case, "after_free", image=False)
    assert_success(run)
    assert iou(saved_masks(server, run, ids["save_mask"]), main_case["expected"].merged_masks()) >= 0.999
    reloaded = server.log_text()[len(before) :].count("Requested to load _PatchedModel")
    assert reloaded == 2, "after /free ComfyUI must load both our models again"
    detecting = [v for v, _ in run.progress(ids["segment"]) if v < DETECTION_SHARE * STEPS_PER_FRAME]
    # detection runs again, layer by layer (a cached result gives no step inside it); 0.33 sends one step per 100 ms at most
    assert len(detecting) >= (5 if throttles_progress(server) else 10), "offloading dropped the cached results with the models: detection runs again"
    measure(server.version, "/free then run", seconds=round(run.seconds, 1), model_loads_after_free=reloaded)


def interrupted_run(server: ComfyServer, g: Graph, segment: str, when) -> tuple[Run, float, list[int]]:
    """Run ``g``; POST /interrupt at the first message for which ``when(seconds_in_segment, progress)`` is true."""
    state = {"segment_started": None, "sent": None, "progress": -1}

    def on_message(run: Run, message: dict) -> None:
        data = message["data"]
        if message["type"] == "executing" and data.get("node") == segment:
            state["segment_started"] = message["t"]
        if message["type"] == "progress" and data.get("node") == segment:
            state["progress"] = data["value"]
        started = state["segment_started"]
        if started is not None and state["sent"] is None and when(message["t"] - started, state["progress"]):
            state["sent"] = time.monotonic() - run.started  # latency counts from the click, before the POST
            server.interrupt()

    run = server.run(g.nodes, on_message=on_message)
    assert state["sent"] is not None, "the run ended before the moment to interrupt it"
    latency = run.of_type("execution_interrupted")[0]["t"] - state["sent"] if run.status == "interrupted" else float("nan")
    return run, latency, [v for v, _ in run.progress(segment)]


def test_interrupt_during_detection(server, main_case):
    g, ids = segment_graph(["zidane.png"], PROMPT, 0.3)  # an image this server has not seen: detection runs in full
    save_outputs(g, ids, "interrupted_detection", image=False)
    detected = DETECTION_SHARE * STEPS_PER_FRAME
    # a fifth of the way into detection, layer by layer: the click lands while the detector runs
    run, latency, values = interrupted_run(server, g, ids["segment"], lambda seconds, progress: detected / 5 <= progress < detected)
    assert run.status == "interrupted"
    assert values and max(values) < detected, f"it went on past detection: {values}"
    measure(server.version, "interrupt during detection", latency_s=round(latency, 2), last_progress=max(values))
    after, ids = run_main(server, main_case, "after_interrupt", image=False)
    assert_success(after)


def test_interrupt_while_decoding_many_boxes(server, main_case, library, input_pngs):
    png = input_pngs["picture4"]
    boxes = library.box_count(png, PROMPT)
    assert boxes >= 200, "the case needs many boxes to decode"
    decoding = DETECTION_SHARE * STEPS_PER_FRAME + (1 - DETECTION_SHARE) * STEPS_PER_FRAME * ENCODER_COST_IN_BOXES / (ENCODER_COST_IN_BOXES + boxes)
    g, ids = segment_graph(["picture4.png"], PROMPT, 0.0, text_threshold=0.0)
    save_outputs(g, ids, "interrupted_decoding", image=False)
    run, latency, values = interrupted_run(server, g, ids["segment"], lambda seconds, progress: progress >= decoding + 3)
    assert run.status == "interrupted"
    assert decoding < max(values) < STEPS_PER_FRAME - 5, f"it did not stop while decoding: {values}"
    measure(server.version, "interrupt while decoding", boxes=boxes, latency_s=round(latency, 2), last_progress=max(values))
    after, ids = run_main(server, main_case, "after_interrupt_decoding", image=False)
    assert_success(after)


def test_many_objects_cost_little_memory_when_unused(server, main_case):
    """500 objects at 810x1080: the per-object masks stay packed (1 bit a pixel) unless ObjectMasks asks."""
    g, ids = segment_graph(["bus.png"], PROMPT, 0.0, text_threshold=0.0, max_detections=500)
    ids = save_outputs(g, ids, "many", image=False, json_out=True)
    before = server.rss_mib()
    run = server.run(g.nodes)
    assert_success(run)
    rows = json.loads(preview_text(run, ids["json"]))
    after = server.rss_mib()
    objects = len(rows)
    assert objects >= 500
    # the same graph with the per-object masks unpacked: what every run used to keep
    ids["count"] = g.add("PreviewAny", source=[g.add("IsMaskEmpty", mask=[g.add("ObjectMasks (segment anything)", detections=[ids["segment"], 2]), 0]), 0])
    unpacked = server.run(g.nodes)
    assert_success(unpacked)
    assert preview_text(unpacked, ids["count"]) == "0"
    with_float_masks = server.rss_mib()
    float_mib = objects * 810 * 1080 * 4 / 2**20
    measure(server.version, "many objects RSS", objects=objects, rss_before_mib=round(before), rss_after_mib=round(after),
            rss_after_object_masks_mib=round(with_float_masks), float32_object_masks_mib=round(float_mib),
            packed_object_masks_mib=round(float_mib / 32, 1), seconds=round(run.seconds, 1))  # fmt: skip


# --- issue 11: preview, core boxes, exclusion, picking ------------------------------------------------


def test_preview_node_draws_the_objects(server, main_case):
    """segment -> PreviewDetections(image, detections) -> SaveImage: the library's picture of the same objects."""
    from grounded_sam.media.images import load_image_file
    from grounded_sam.media.preview import draw_preview

    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"])
    load = g.nodes[ids["segment"]]["inputs"]["image"]
    preview = g.add(PREVIEW, image=load, detections=[ids["segment"], 2])
    saved = g.add("SaveImage", images=[preview, 0], filename_prefix="preview")
    run = server.run(g.nodes)
    assert_success(run)
    (picture,) = saved_pngs(server, run, saved)
    frame = load_image_file(main_case["png"])[0]
    expected = draw_preview(frame, main_case["expected"]).numpy()
    assert picture.shape == expected.shape
    close = (np.abs(picture.astype(int) - expected.astype(int)) <= 1).all(axis=-1).mean()
    changed = (picture != frame.numpy()).any(axis=-1).mean()
    assert close >= 0.999 and changed > 0.01, (close, changed)
    measure(server.version, "preview node", seconds=round(run.seconds, 1), pixels_equal_to_library=round(float(close), 5))


def test_bounding_boxes_in_the_core_layout(server, main_case):
    """The bboxes output as ComfyUI's core BOUNDING_BOX list; on 0.33 it feeds the core DrawBBoxes node."""
    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"])
    text = g.add("PreviewAny", source=[ids["segment"], 4])
    core = "DrawBBoxes" in server.object_info()
    if core:
        load = g.nodes[ids["segment"]]["inputs"]["image"]
        drawn = g.add("SaveImage", images=[g.add("DrawBBoxes", image=load, bboxes=[ids["segment"], 4]), 0], filename_prefix="core_boxes")
    run = server.run(g.nodes)
    assert_success(run)
    (frame_boxes,) = json.loads(preview_text(run, text))  # one list per frame
    expected = main_case["expected"]
    assert [b["label"] for b in frame_boxes] == list(expected.labels)
    h, w = expected.image_size
    for box, want, score in zip(frame_boxes, expected.boxes.tolist(), expected.scores.tolist(), strict=True):
        xyxy = [box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]]
        assert max(abs(a - b) / s for a, b, s in zip(xyxy, want, (w, h, w, h), strict=True)) < 1e-3
        assert abs(box["score"] - score) < 1e-3 and 0 <= box["x"] and box["x"] + box["width"] <= w + 1e-3
    if core:
        (picture,) = saved_pngs(server, run, drawn)
        best = frame_boxes[0]  # drawn last (DrawBBoxes draws by rising score), so nothing covers its corner
        corner = tuple(int(v) for v in picture[int(best["y"]) + 1, int(best["x"]) + 1][:3])
        assert corner in CORE_BOX_COLOURS, corner
    assert server.version == "0.3.75" or core, "ComfyUI 0.33 must have the core DrawBBoxes node"
    measure(server.version, "bboxes output" + (" -> core DrawBBoxes" if core else ""), boxes=len(frame_boxes))


@pytest.fixture(scope="session")
def exclusion_case(library, input_pngs):
    """A prompt pair whose both phrases own some of the few best boxes (random weights favour some phrases)."""
    png = input_pngs["bus"]
    for keep, leave in (("person", "bus"), ("bus", "person"), ("window", "wheel"), ("a wheel", "a window"), ("sign", "tree")):
        phrases = library.phrases_in_top(png, f"{keep} . {leave}")
        count = next((k for k in range(1, 41) if set(phrases[:k]) == {0, 1}), None)
        if count is not None:
            return png, keep, leave, threshold_for(library, png, f"{keep} . {leave}", count + 2)
    raise AssertionError("no prompt pair whose phrases both own one of the 40 best boxes")


def test_exclude_cuts_the_excluded_objects_out(server, library, exclusion_case):
    png, keep, leave, threshold = exclusion_case
    expected = library.segment(png, keep, threshold, exclude=leave)
    everything = library.segment(png, f"{keep} . {leave}", threshold)
    assert len(expected) > 0 and set(everything.phrase_index.tolist()) == {0, 1}, "both phrases must own boxes for this to mean anything"
    g, ids = segment_graph([png.name], keep, threshold, exclude=leave)
    ids = save_outputs(g, ids, "exclude", image=False, objects=True, json_out=True)
    run = server.run(g.nodes)
    assert_success(run)
    assert_same_detections(json.loads(preview_text(run, ids["json"])), expected, expected.image_size)
    merged = saved_masks(server, run, ids["save_mask"])
    assert iou(merged, expected.merged_masks()) >= 0.999
    for got, want in zip(saved_masks(server, run, ids["save_objects"]), expected.masks, strict=True):
        assert iou(got, want) >= 0.999
    measure(server.version, "exclude", seconds=round(run.seconds, 1), kept=len(expected))


def test_pick_objects_by_area(server, main_case):
    from grounded_sam.selection.picking import pick_objects

    expected = pick_objects(main_case["expected"], top_k=2, rank_by="area")
    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"])
    pick = g.add(PICK, detections=[ids["segment"], 2], label="", top_k=2, rank_by="area")
    masks = g.add("SaveImage", images=[g.add("MaskToImage", mask=[pick, 0]), 0], filename_prefix="picked")
    merged = g.add("SaveImage", images=[g.add("MaskToImage", mask=[pick, 1]), 0], filename_prefix="picked_merged")
    boxes = g.add("PreviewAny", source=[pick, 3])
    by_label = g.add("PreviewAny", source=[g.add(PICK, detections=[ids["segment"], 2], label="person", top_k=0, rank_by="score"), 3])
    run = server.run(g.nodes)
    assert_success(run)
    got = saved_masks(server, run, masks)
    assert got.shape[0] == len(expected) == 2
    areas = [int(m.sum()) for m in got]
    assert areas == sorted(areas, reverse=True)
    for mask, want in zip(got, expected.masks, strict=True):
        assert iou(mask, want) >= 0.999
    assert iou(saved_masks(server, run, merged), expected.merged_masks()) >= 0.999
    assert [b["label"] for b in json.loads(preview_text(run, boxes))[0]] == list(expected.labels)
    people = json.loads(preview_text(run, by_label))[0]
    assert [b["label"] for b in people] == [label for label in main_case["expected"].labels if "person" in label.split()]
    measure(server.version, "pick objects", seconds=round(run.seconds, 1))


def test_pick_objects_on_two_frames(server, library, input_pngs):
    """PickObjects' merged mask for a batch: every frame its own picked objects (the second frame's used to be empty)."""
    from grounded_sam import DetectionSettings
    from grounded_sam.selection.picking import pick_objects

    first, second = input_pngs["picture1"], input_pngs["picture2"]
    threshold = min(threshold_for(library, png, PROMPT, 3) for png in (first, second))  # at least three boxes in each frame
    g, ids = segment_graph(["picture1.png", "picture2.png"], PROMPT, threshold)
    pick = g.add(PICK, detections=[ids["segment"], 2], label="", top_k=1, rank_by="area")
    merged = g.add("SaveImage", images=[g.add("MaskToImage", mask=[pick, 1]), 0], filename_prefix="picked_two_frames")
    run = server.run(g.nodes)
    assert_success(run)
    got = saved_masks(server, run, merged)
    both = torch.cat([comfy_image(first), comfy_image(second)])
    expected = pick_objects(library.pipeline.segment(both, PROMPT, DetectionSettings(threshold, 0.25)), top_k=1, rank_by="area").merged_masks()
    assert got.shape[0] == 2 and expected[0].any() and expected[1].any()
    for frame in range(2):
        assert iou(got[frame], expected[frame]) >= 0.999, frame
    measure(server.version, "pick objects, two frames", seconds=round(run.seconds, 1), picked_pixels=[int(m.sum()) for m in got])


@pytest.fixture(scope="session")
def mm_case(server_checkpoints, library, input_pngs):
    """MM-Grounding-DINO (a transformers folder) for boxes, SAM ViT-B for masks, run by the library."""
    from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino

    pipeline = GroundedSam(load_grounding_dino(server_checkpoints["mm"], "cpu"), library.pipeline.segmenter)
    png = input_pngs["zidane"]
    scores = pipeline.detector.detect(to_uint8_frames(comfy_image(png))[0], PROMPT, DetectionSettings(0.0, 0.0, nms_iou=None)).scores
    threshold = threshold_in_widest_gap(scores, range(8, 20), min_gap=2e-4)
    expected = pipeline.segment(comfy_image(png), PROMPT, DetectionSettings(threshold, 0.25))
    return {"png": png, "threshold": threshold, "expected": expected, "detector": pipeline.detector}


def threshold_in_widest_gap(scores: torch.Tensor, ranks: range, min_gap: float) -> float:
    """A threshold keeping the best k of ``scores`` (k in ``ranks``), where the gap to the next score is widest."""
    ordered = scores.sort(descending=True).values
    gap, k = max((float(ordered[k - 1] - ordered[k]), k) for k in ranks)
    assert gap > min_gap, "no gap in the scores to place a threshold in"
    return round(float(ordered[k - 1] + ordered[k]) / 2, 7)


def test_mm_grounding_dino_folder_in_the_loader(server, mm_case):
    """An MM-Grounding-DINO transformers folder in models/grounding-dino: listed by the loader, run with SAM."""
    choices = server.object_info()["GroundingDinoModelLoader (segment anything)"]["input"]["required"]["model_name"][0]
    assert MM_FOLDER in choices and "mm_grounding_dino_tiny_o365v1_goldg (transformers)" in choices
    g, ids = segment_graph([mm_case["png"].name], PROMPT, mm_case["threshold"], dino=MM_FOLDER)
    ids = save_outputs(g, ids, "mm", image=False, json_out=True)
    run = server.run(g.nodes)
    assert_success(run)
    expected = mm_case["expected"]
    assert len(expected) > 0
    mask = saved_masks(server, run, ids["save_mask"])
    assert iou(mask, expected.merged_masks()) >= 0.999
    assert_same_detections(json.loads(preview_text(run, ids["json"])), expected, expected.image_size)
    measure(server.version, "MM-Grounding-DINO + SAM", seconds=round(run.seconds, 1), objects=len(expected),
            mask_iou=round(iou(mask, expected.merged_masks()), 5))  # fmt: skip


@pytest.fixture(scope="session")
def sam2_case(server_checkpoints, mm_case):
    """MM-Grounding-DINO boxes, SAM 2.1 tiny masks (Meta's release file), run by the library on the mm case."""
    from grounded_sam import DetectionSettings, GroundedSam, load_sam

    pipeline = GroundedSam(mm_case["detector"], load_sam(server_checkpoints["sam2"], "cpu"))
    expected = pipeline.segment(comfy_image(mm_case["png"]), PROMPT, DetectionSettings(mm_case["threshold"], 0.25))
    return {**mm_case, "expected": expected}


def assert_same_objects(server, run: Run, ids: dict[str, str], expected, case: str) -> None:
    """The JSON rows, every object mask and the merged mask against the library's result; the figures measured."""
    assert_same_detections(json.loads(preview_text(run, ids["json"])), expected, expected.image_size)
    objects = saved_masks(server, run, ids["save_objects"])
    assert objects.shape[0] == len(expected)
    ious = [iou(got, want) for got, want in zip(objects, expected.masks, strict=True)]
    assert min(ious) >= 0.999, ious
    assert iou(saved_masks(server, run, ids["save_mask"]), expected.merged_masks()) >= 0.999
    measure(server.version, case, seconds=round(run.seconds, 1), objects=len(expected), min_mask_iou=round(min(ious), 5))


def assert_mm_boxes_segmented(server, case: dict, sam: str, prefix: str, name: str) -> None:
    """MM-Grounding-DINO boxes segmented by ``sam`` through the seed's loaders and segment node, as the library does."""
    g, ids = segment_graph([case["png"].name], PROMPT, case["threshold"], sam=sam, dino=MM_FOLDER)
    ids = save_outputs(g, ids, prefix, image=False, objects=True, json_out=True)
    run = server.run(g.nodes)
    assert_success(run)
    assert len(case["expected"]) > 0
    assert_same_objects(server, run, ids, case["expected"], name)


def test_sam2_and_mm_grounding_dino_in_the_seed_nodes(server, sam2_case):
    """SAM 2.1 (Meta's .pt in models/sams) with MM-Grounding-DINO, through the seed's loaders and segment node."""
    choices = server.object_info()["SAMModelLoader (segment anything)"]["input"]["required"]["model_name"][0]
    assert SAM2_FILE in choices and "sam2.1_hiera_large (898MB)" in choices and "sam2.1-hiera-base-plus (transformers)" in choices
    assert_mm_boxes_segmented(server, sam2_case, SAM2_FILE, "sam2", "SAM 2.1 + MM-Grounding-DINO")


@pytest.fixture(scope="session")
def sam3_case(server_checkpoints, input_pngs):
    """SAM 3 (Meta's release format in models/sam3) in both sockets, run by the library on zidane."""
    from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam

    path = server_checkpoints["sam3"]
    pipeline = GroundedSam(load_grounding_dino(path, "cpu"), load_sam(path, "cpu"))
    png = input_pngs["zidane"]
    frame = to_uint8_frames(comfy_image(png))[0]
    phrases = [p.strip() for p in PROMPT.split(".")]
    scores = torch.cat([pipeline.detector.raw_predictions(frame, p)[0] for p in phrases])
    threshold = threshold_in_widest_gap(scores, range(4, 12), min_gap=1e-6)
    return {"png": png, "threshold": threshold, "expected": pipeline.segment(comfy_image(png), PROMPT, DetectionSettings(threshold, 0.25))}


def test_sam3_in_both_seed_loaders(server, sam3_case):
    """sam3.pt in models/sam3: listed by both seed loaders; in both sockets one pass gives the library's objects and masks."""
    info = server.object_info()
    for loader in ("SAMModelLoader (segment anything)", "GroundingDinoModelLoader (segment anything)"):
        assert SAM3_FILE in info[loader]["input"]["required"]["model_name"][0], loader
    g, ids = segment_graph([sam3_case["png"].name], PROMPT, sam3_case["threshold"], sam=SAM3_FILE, dino=SAM3_FILE)
    ids = save_outputs(g, ids, "sam3", image=False, objects=True, json_out=True)
    run = server.run(g.nodes)
    assert_success(run)
    expected = sam3_case["expected"]
    assert len(expected) > 0 and set(expected.labels) <= {"person", "bus"}
    assert_same_objects(server, run, ids, expected, "SAM 3 in both sockets")


@pytest.fixture(scope="session")
def sam3_masks_case(server_checkpoints, mm_case):
    """MM-Grounding-DINO boxes, SAM 3 masks (its box-to-mask head), run by the library on the mm case."""
    from grounded_sam import DetectionSettings, GroundedSam, load_sam

    pipeline = GroundedSam(mm_case["detector"], load_sam(server_checkpoints["sam3"], "cpu"))
    expected = pipeline.segment(comfy_image(mm_case["png"]), PROMPT, DetectionSettings(mm_case["threshold"], 0.25))
    return {**mm_case, "expected": expected}


def test_other_boxes_with_sam3_masks_in_the_seed_nodes(server, sam3_masks_case):
    """sam3.pt in the SAM loader with another detector: SAM 3 segments that detector's boxes, as the library does."""
    assert_mm_boxes_segmented(server, sam3_masks_case, SAM3_FILE, "sam3_masks", "MM-Grounding-DINO + SAM 3 masks")


# --- issue 22: soft edges -----------------------------------------------------------------------

REFINE = "RefineMask (segment anything)"


def add_refine(g: Graph, image: list, mask: list, method: str, **settings) -> str:
    """RefineMask with the library's defaults for what ``settings`` leaves out."""
    from grounded_sam.matting import RefineSettings

    defaults = RefineSettings()
    inputs = {name: settings.get(name, getattr(defaults, name)) for name in ("detail_erode", "detail_dilate", "black_point", "white_point", "max_megapixels")}
    return g.add(REFINE, image=image, mask=mask, method=method, **inputs)


def as_saved(values: np.ndarray) -> np.ndarray:
    """What SaveImage writes of 0..1 floats: 255x, clipped, truncated to 8 bits."""
    return np.clip(255.0 * values, 0, 255).astype(np.uint8)


def assert_refined_like_the_library(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to one 8-bit level where float noise between two processes tips a truncation."""
    difference = np.abs(got.astype(int) - want.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, (difference.max(), (difference > 0).mean())


def put_scene(server: ComfyServer, g: Graph, s, name: str) -> tuple[list, list]:
    """A scene's picture and coarse mask as PNGs in the server's input folder; their LoadImage / LoadImageMask sockets."""
    Image.fromarray(s.image).save(server.input_dir / f"{name}.png")
    Image.fromarray(s.mask.astype(np.uint8) * 255).save(server.input_dir / f"{name}_mask.png")
    return [g.add("LoadImage", image=f"{name}.png"), 0], [g.add("LoadImageMask", image=f"{name}_mask.png", channel="red"), 0]


def test_refine_mask_equals_the_library(server, main_case, matting_scenes, input_pngs):
    """RefineMask (closed form, refined at 0.1 MP and brought back up) on a scene with a SAM-like mask -> the alpha, the
    foreground colours and core JoinImageWithAlpha's RGBA cut-out: the library's. And wired after the segment node
    (guided filter: random weights make speckled masks), the library's refinement of the server's own mask."""
    from grounded_sam.matting import RefineSettings, refine_alpha

    s = matting_scenes[0]
    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"])
    ids = save_outputs(g, ids, "refine", image=False)
    image, mask = put_scene(server, g, s, "scene0")
    refine = add_refine(g, image, mask, "closed_form", max_megapixels=0.1)
    alpha_node = g.add("SaveImage", images=[g.add("MaskToImage", mask=[refine, 0]), 0], filename_prefix="refine_alpha")
    colour_node = g.add("SaveImage", images=[refine, 1], filename_prefix="refine_foreground")
    cutout = g.add("JoinImageWithAlpha", image=[refine, 1], alpha=[g.add("InvertMask", mask=[refine, 0]), 0])  # core alpha is 1 - mask
    cutout_node = g.add("SaveImage", images=[cutout, 0], filename_prefix="refine_cutout")
    chained = add_refine(g, ids["image"], [ids["segment"], 1], "guided_filter")
    chained_node = g.add("SaveImage", images=[g.add("MaskToImage", mask=[chained, 0]), 0], filename_prefix="refine_chained")
    run = server.run(g.nodes)
    assert_success(run)
    matte = refine_alpha(s.image, s.mask, RefineSettings("closed_form", max_megapixels=0.1))
    soft = ((matte.alpha > 0.05) & (matte.alpha < 0.95)).sum()
    assert soft > 1000, "the refined edge must hold soft alpha, or equality proves little"
    [alpha_png], [colour_png], [cutout_png] = (saved_pngs(server, run, node) for node in (alpha_node, colour_node, cutout_node))
    assert_refined_like_the_library(alpha_png[..., 0], as_saved(matte.alpha))
    assert_refined_like_the_library(colour_png, as_saved(matte.foreground))
    assert cutout_png.shape[2] == 4
    assert_refined_like_the_library(cutout_png[..., 3], as_saved(matte.alpha))  # RGBA: the alpha the right way round
    frame = to_uint8_frames(comfy_image(input_pngs["bus"]))[0].numpy()
    chained_want = refine_alpha(frame, saved_masks(server, run, ids["save_mask"])[0].numpy(), RefineSettings("guided_filter")).alpha
    [chained_png] = saved_pngs(server, run, chained_node)
    assert ((chained_want > 0.05) & (chained_want < 0.95)).any()
    assert_refined_like_the_library(chained_png[..., 0], as_saved(chained_want))
    measure(server.version, "refine mask", soft_pixels=int(soft), seconds=round(run.seconds, 1))


@pytest.fixture(scope="session")
def matting_scenes(input_pngs):
    """Two procedural scenes with known alpha over the shared photos (tests/matting_scenes.py), with SAM-like coarse masks."""
    from matting_scenes import scene

    return [scene(np.asarray(Image.open(input_pngs[name])), seed) for seed, name in enumerate(("picture1", "picture2"))]


def test_refine_a_batch_with_vitmatte_frame_by_frame(server, matting_scenes, server_checkpoints):
    """Two frames with a mask each (batched with core nodes) through ViTMatte (small) from models/vitmatte: each frame's
    alpha and colours are the library's, in order, and the bar counts the frames."""
    from grounded_sam.matting import RefineSettings, load_vitmatte, refine_alpha

    g = Graph()
    images, masks = [], []
    for k, s in enumerate(matting_scenes):
        image, mask = put_scene(server, g, s, f"scene{k}")
        images.append(image)
        masks.append([g.add("MaskToImage", mask=mask), 0])
    frames = [g.add("ImageBatch", image1=images[0], image2=images[1]), 0]
    mask = [g.add("ImageToMask", image=[g.add("ImageBatch", image1=masks[0], image2=masks[1]), 0], channel="red"), 0]
    refine = add_refine(g, frames, mask, "vitmatte (small)")
    alpha_node = g.add("SaveImage", images=[g.add("MaskToImage", mask=[refine, 0]), 0], filename_prefix="refine_batch_alpha")
    colour_node = g.add("SaveImage", images=[refine, 1], filename_prefix="refine_batch_foreground")
    run = server.run(g.nodes)
    assert_success(run)
    model = load_vitmatte(server_checkpoints["vitmatte"], "cpu")
    alphas, colours = saved_pngs(server, run, alpha_node), saved_pngs(server, run, colour_node)
    assert len(alphas) == len(colours) == 2
    for got, colour, s in zip(alphas, colours, matting_scenes, strict=True):
        want = refine_alpha(s.image, s.mask, RefineSettings("vitmatte"), model)
        assert ((want.alpha > 0.05) & (want.alpha < 0.95)).sum() > 1000, "random weights must still give soft alpha"
        assert_refined_like_the_library(got[..., 0], as_saved(want.alpha))
        assert_refined_like_the_library(colour, as_saved(want.foreground))
    assert not np.array_equal(alphas[0], alphas[1])  # two scenes: the order shows
    values = [v for v, _ in run.progress(refine)]
    assert values and values == sorted(values) and max(values) <= 2
    if not throttles_progress(server):
        assert values == [1, 2]


def test_refine_stops_mid_frame_and_refuses_a_mask_of_another_size(server, input_pngs):
    """A stop lands inside a frame's solve (three 1280x960 frames of closed-form matting, stopped a second into the
    first); a mask of another image's size is a clear error; the next run works."""
    from matting_scenes import scene

    g = Graph()
    image, mask = put_scene(server, g, scene(np.asarray(Image.open(input_pngs["picture4"])), 7, size=(960, 1280)), "big_scene")
    refine = add_refine(g, [g.add("RepeatImageBatch", image=image, amount=3), 0], mask, "closed_form", max_megapixels=2.0)
    g.add("SaveImage", images=[g.add("MaskToImage", mask=[refine, 0]), 0], filename_prefix="refine_stopped")
    sent = {}

    def click_a_second_into_the_refine(run: Run, message: dict) -> None:  # no message comes mid-frame: a timer clicks
        if message["type"] == "executing" and message["data"].get("node") == refine and not sent:
            def click() -> None:
                sent["t"] = time.monotonic() - run.started
                server.interrupt()

            sent["timer"] = threading.Timer(1.0, click)
            sent["timer"].start()

    run = server.run(g.nodes, on_message=click_a_second_into_the_refine)
    assert "t" in sent, "the refine ended before the click"
    assert run.status == "interrupted"
    assert not run.progress(refine), f"it finished a frame before stopping: {run.progress(refine)}"
    latency = run.of_type("execution_interrupted")[0]["t"] - sent["t"]
    measure(server.version, "refine interrupted mid-frame", latency_s=round(latency, 2))
    g = Graph()
    bus, wrong = g.add("LoadImage", image="bus.png"), g.add("SolidMask", value=1.0, width=640, height=480)
    g.add("SaveImage", images=[g.add("MaskToImage", mask=[add_refine(g, [bus, 0], [wrong, 0], "guided_filter"), 0]), 0], filename_prefix="x")
    bad = server.run(g.nodes)
    assert bad.status == "error"
    assert "the mask is 640x480 but the image is 810x1080" in bad.error["exception_message"]
    g = Graph()
    image, mask = [g.add("LoadImage", image="big_scene.png"), 0], [g.add("LoadImageMask", image="big_scene_mask.png", channel="red"), 0]
    g.add("SaveImage", images=[g.add("MaskToImage", mask=[add_refine(g, image, mask, "guided_filter"), 0]), 0], filename_prefix="after_refine")
    assert_success(server.run(g.nodes))


# --- point prompts ------------------------------------------------------------------------------

POINTS = "PointsSegment (segment anything)"


@pytest.fixture(scope="session")
def clicks_case(library, server_checkpoints, main_case, input_pngs):
    """Clicks on the bus photo: two on and one off an object for PointsSegment (SAM ViT-B and SAM 2.1 tiny), and one
    in the main case's first box plus one in no box for the segment node; what the library makes of each."""
    from grounded_sam import DetectionSettings, load_sam
    from grounded_sam.click_refinement import segment_clicks
    from grounded_sam.clicks import Clicks

    image = comfy_image(main_case["png"])
    positive, negative = [(330.0, 560.0), (420.0, 700.0)], [(700.0, 300.0)]
    clicks = Clicks.of(positive, negative)
    expected = {"sam": segment_clicks(library.pipeline.segmenter, image, clicks)}
    expected["sam2"] = segment_clicks(load_sam(server_checkpoints["sam2"], "cpu"), image, clicks)
    x0, y0, x1, y1 = main_case["expected"].boxes[0].tolist()
    boxes = main_case["expected"].boxes
    inside = ((x0 + x1) / 2, (y0 + y1) / 2)
    loose = next(
        (float(x), float(y)) for x in range(5, 800, 20) for y in range(5, 1000, 20)
        if not ((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])).any()
    )  # fmt: skip
    fix = Clicks.of([inside, loose])
    settings = DetectionSettings(main_case["threshold"], 0.25)
    expected["segment"] = library.pipeline.segment(image, PROMPT, settings, clicks=fix)
    as_json = lambda points: json.dumps([{"x": x, "y": y} for x, y in points])  # noqa: E731
    return {"positive": as_json(positive), "negative": as_json(negative), "fix": as_json([inside, loose]), "expected": expected}


def test_clicks_in_points_segment_and_the_segment_node(server, main_case, clicks_case):
    """PointsSegment with SAM ViT-B and SAM 2.1 tiny, and clicks that fix the segment node's objects, against the library."""
    g, ids = segment_graph(["bus.png"], PROMPT, main_case["threshold"], positive_coords=clicks_case["fix"], negative_coords="")
    ids = save_outputs(g, ids, "clicks_fix", image=False, objects=True, json_out=True)
    saved = {}
    for name, sam in (("sam", SAM_FILE), ("sam2", SAM2_FILE)):
        loader = g.add("SAMModelLoader (segment anything)", model_name=sam)
        node = g.add(POINTS, sam_model=[loader, 0], image=ids["image"], positive_coords=clicks_case["positive"], negative_coords=clicks_case["negative"])
        saved[name] = g.add("SaveImage", images=[g.add("MaskToImage", mask=[node, 0]), 0], filename_prefix=f"clicks_{name}")
    run = server.run(g.nodes)
    assert_success(run)
    figures = {}
    for name, node in saved.items():
        want = clicks_case["expected"][name].merged_masks()
        assert want.any() and not want.all(), "a degenerate mask proves nothing"
        figures[f"{name}_iou"] = round(iou(saved_masks(server, run, node), want), 5)
        assert figures[f"{name}_iou"] >= 0.999
    fixed = clicks_case["expected"]["segment"]
    assert fixed.labels[-1] == "clicked" and len(fixed) == len(main_case["expected"]) + 1
    assert_same_objects(server, run, ids, fixed, "clicks fix the segment node's objects")
    measure(server.version, "clicks", seconds=round(run.seconds, 1), **figures)
