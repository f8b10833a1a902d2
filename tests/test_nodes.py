"""The seed pack's nodes, called as ComfyUI calls them, with ComfyUI-shaped tensors."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from scenes import PROMPT

from grounded_sam import DetectionSettings, GroundedSam
from grounded_sam.comfy import adapter
from grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, GroundingDinoSAMSegment
from grounded_sam.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SEED_IDS = {
    "GroundingDinoSAMSegment (segment anything)",
    "SAMModelLoader (segment anything)",
    "GroundingDinoModelLoader (segment anything)",
    "InvertMask (segment anything)",
    "IsMaskEmpty",
}
def test_node_ids_and_sockets_are_the_seeds():
    assert SEED_IDS <= set(NODE_CLASS_MAPPINGS)
    node = NODE_CLASS_MAPPINGS["GroundingDinoSAMSegment (segment anything)"]
    required = node.INPUT_TYPES()["required"]
    assert list(required) == ["sam_model", "grounding_dino_model", "image", "prompt", "threshold"]
    assert required["threshold"] == ("FLOAT", {"default": 0.3, "min": 0, "max": 1.0, "step": 0.01})
    assert node.RETURN_TYPES[:2] == ("IMAGE", "MASK") and node.FUNCTION == "main"


def test_repo_root_loads_like_a_custom_node_folder():
    """ComfyUI imports custom_nodes/<folder>/__init__.py as a package named after the folder."""
    spec = importlib.util.spec_from_file_location("grounded_sam_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["grounded_sam_pack"] = module
    try:
        spec.loader.exec_module(module)
        assert SEED_IDS <= set(module.NODE_CLASS_MAPPINGS)
    finally:
        sys.modules.pop("grounded_sam_pack", None)


def test_repo_root_loads_as_a_plain_module_too():
    """pytest imports a checkout's __init__.py as a plain module when the folder's name is not a Python name ("grounded-sam")."""
    spec = importlib.util.spec_from_file_location("__init__", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert SEED_IDS <= set(module.NODE_CLASS_MAPPINGS)


def test_batch_with_empty_middle_frame_keeps_every_frame_in_order(detector, segmenter, batch_with_empty_middle):
    images, threshold = batch_with_empty_middle
    image_out, mask_out, found, detections, bboxes = GroundingDinoSAMSegment().main(
        detector, segmenter, images, PROMPT, threshold, text_threshold=threshold - 0.02
    )
    (objects,) = NODE_CLASS_MAPPINGS["ObjectMasks (segment anything)"]().main(found)
    assert image_out.shape == (3, 640, 640, 3) and image_out.dtype == torch.float32
    assert mask_out.shape == (3, 640, 640) and mask_out.dtype == torch.float32
    assert mask_out[1].sum() == 0 and mask_out[0].sum() > 0 and mask_out[2].sum() > 0
    assert torch.equal(image_out, (images * 255).to(torch.uint8).float() / 255 * mask_out.unsqueeze(-1))
    rows = json.loads(detections)
    assert {r["frame"] for r in rows} == {0, 2} and objects.shape == (len(rows), 640, 640)
    # BOUNDING_BOX: a list per frame (the empty middle one too), boxes as x, y, width, height
    assert [len(frame) for frame in bboxes] == [sum(r["frame"] == i for r in rows) for i in range(3)]
    flat = [box for frame in bboxes for box in frame]
    for box, row in zip(flat, rows, strict=True):
        x0, y0, x1, y1 = row["box_xyxy"]
        assert abs(box["x"] - x0) < 1e-3 and abs(box["y"] + box["height"] - y1) < 1e-3 and box["label"] == row["label"]
    assert objects.dtype == torch.float32 and [int(m.sum()) for m in objects] == [r["mask_area"] for r in rows]
    for index in (0, 2):  # the per-object masks make up each frame's merged mask
        mine = [i for i, r in enumerate(rows) if r["frame"] == index]
        assert torch.equal(objects[mine].amax(0), mask_out[index])
    pipeline = GroundedSam(detector, segmenter)
    settings = DetectionSettings(threshold, threshold - 0.02)
    for index in (0, 2):  # each frame's mask is the one that frame gets on its own
        alone = pipeline.segment(images[index], PROMPT, settings)
        assert torch.equal(alone.merged_masks()[0].float(), mask_out[index])


def test_invert_and_is_empty_nodes():
    mask = torch.zeros((2, 4, 4))
    mask[0, 1, 1] = 1.0
    (inverted,) = NODE_CLASS_MAPPINGS["InvertMask (segment anything)"]().main(mask)
    assert torch.equal(inverted, 1.0 - mask)
    is_empty = NODE_CLASS_MAPPINGS["IsMaskEmpty"]().main
    assert is_empty(torch.zeros((1, 4, 4))) == (1,) and is_empty(mask) == (0,)


def test_wrong_model_objects_are_explained(detector):
    node = GroundingDinoSAMSegment()
    with pytest.raises(InputError, match="SAMModelLoader"):
        node.main(detector, "not a model", torch.zeros((1, 8, 8, 3)), "dog", 0.3)


# --- the adapter, both paths --------------------------------------------------------------


def test_adapter_without_comfyui(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDED_SAM_MODELS_DIR", str(tmp_path))
    (tmp_path / "sams").mkdir()
    (tmp_path / "sams" / "my_sam.pth").write_bytes(b"x")
    assert not adapter.in_comfyui()
    (tmp_path / "sam3").mkdir()
    (tmp_path / "sam3" / "sam3.pt").write_bytes(b"x")
    assert adapter.model_search_dirs("sams") == [tmp_path / "sams", tmp_path / "sam3"]
    choices = adapter.model_choices("sams")
    assert choices[:2] == ["my_sam.pth", "sam3.pt"] and "sam3.pt" in adapter.model_choices("grounding-dino") and "sam_vit_h (2.56GB)" in choices and "mobile_sam(39MB)" in choices
    assert adapter.progress_reporter(3) is None and adapter.cancel_check() is None
    adapter.load_for_inference(torch.nn.Linear(1, 1))  # no-op without ComfyUI


class FakeComfy:
    """Stand-ins for the few ComfyUI modules the adapter calls: ComfyUI itself cannot be installed here."""

    def __init__(self, models_dir: Path) -> None:
        self.loaded: list = []
        self.progress: list[tuple[int, int]] = []
        self.interrupt = False
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(models_dir)
        fp.folder_names_and_paths = {}
        fp.get_folder_paths = lambda name: fp.folder_names_and_paths[name][0]
        mm = types.ModuleType("comfy.model_management")
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")

        def load_models_gpu(patchers, force_full_load=False):
            assert force_full_load  # a model split across devices could not run
            self.loaded.append(patchers)

        mm.load_models_gpu = load_models_gpu

        def interrupted():
            if self.interrupt:
                raise RuntimeError("Processing interrupted")

        mm.throw_exception_if_processing_interrupted = interrupted
        utils = types.ModuleType("comfy.utils")
        outer = self

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None):
                outer.progress.append((value, total))

        utils.ProgressBar = ProgressBar
        patcher = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device):
                self.model = model
                model.device = offload_device  # as ComfyUI's does: a transformers model refuses this
                self.on_detach = []

            def add_callback(self, kind, callback):
                assert kind == "on_detach_after"
                self.on_detach.append(callback)

            def detach(self, unpatch_all=True):
                for callback in self.on_detach:
                    callback(self, unpatch_all)

        patcher.ModelPatcher = ModelPatcher
        extension = types.ModuleType("comfy.patcher_extension")
        extension.CallbacksMP = types.SimpleNamespace(ON_DETACH="on_detach_after")
        comfy = types.ModuleType("comfy")
        self.modules = {"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils, "comfy.model_patcher": patcher, "comfy.patcher_extension": extension}


def test_adapter_inside_comfyui(tmp_path, monkeypatch, detector, segmenter, batch_with_empty_middle):
    fake = FakeComfy(tmp_path)
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert adapter.in_comfyui()
    fp = fake.modules["folder_paths"]
    fp.folder_names_and_paths["sams"] = (["/data/extra/sams"], {".pth"})  # as extra_model_paths.yaml leaves it
    adapter.register_model_folders()
    assert fp.folder_names_and_paths["grounding-dino"][0] == [str(tmp_path / "grounding-dino")]
    assert fp.folder_names_and_paths["sams"][0] == ["/data/extra/sams", str(tmp_path / "sams")]
    assert ".safetensors" in fp.folder_names_and_paths["sams"][1]
    assert fp.folder_names_and_paths["sam3"][0] == [str(tmp_path / "sam3")]
    assert adapter.model_search_dirs("sams") == [Path("/data/extra/sams"), tmp_path / "sams", tmp_path / "sam3"]
    images, threshold = batch_with_empty_middle
    GroundingDinoSAMSegment().main(detector, segmenter, images, PROMPT, threshold)
    values = [value for value, _ in fake.progress]
    assert {total for _, total in fake.progress} == {300} and values == sorted(values) and values[-1] == 300
    assert [v for v in values if 0 < v < 100], "the bar must move inside the first frame"
    assert {100, 200} <= set(values)  # each frame ends on its own step
    assert [p.model.model for p in fake.loaded[0]] == [detector.model, segmenter.model]
    assert len(segmenter.embedding_cache) > 0
    for patcher in fake.loaded[0]:  # what ComfyUI does to re-load a loaded model on every run: caches stay
        patcher.detach(unpatch_all=False)
    assert len(segmenter.embedding_cache) > 0 and len(detector.prediction_cache) > 0
    for patcher in fake.loaded[0]:  # ComfyUI unloads them: their cached results go too
        patcher.detach()
    assert len(segmenter.embedding_cache) == len(detector.prediction_cache) == len(detector.backbone_cache) == 0
    fake.interrupt = True
    with pytest.raises(RuntimeError, match="interrupted"):
        GroundingDinoSAMSegment().main(detector, segmenter, images, PROMPT, threshold)


def test_loader_nodes_list_load_and_reuse_models(tmp_path, monkeypatch, sam_checkpoint, dino_checkpoint):
    import shutil

    from grounded_sam import ModelNotFoundError, SamSegmenter

    monkeypatch.setenv("GROUNDED_SAM_MODELS_DIR", str(tmp_path))
    (tmp_path / "sams").mkdir()
    shutil.copy(sam_checkpoint, tmp_path / "sams" / "mine.pth")
    sam_loader = NODE_CLASS_MAPPINGS["SAMModelLoader (segment anything)"]
    assert sam_loader.INPUT_TYPES()["required"]["model_name"][0][0] == "mine.pth"
    (first,) = sam_loader().main("mine.pth")
    (again,) = sam_loader().main("mine.pth")
    assert isinstance(first, SamSegmenter) and again is first
    dino_loader = NODE_CLASS_MAPPINGS["GroundingDinoModelLoader (segment anything)"]
    with pytest.raises(ModelNotFoundError, match="offline"):  # conftest sets HF_HUB_OFFLINE=1
        dino_loader().main("GroundingDINO_SwinT_OGC (694MB)")
    (detector,) = dino_loader().main(str(dino_checkpoint))
    assert detector.name == "Grounding DINO Swin(32)"  # the tiny test model, read from its tensors


def test_preview_and_pick_nodes_on_packed_objects():
    from test_preview import two_objects

    from grounded_sam.comfy.nodes import SegmentedObjects
    from grounded_sam.media.preview import draw_preview

    found = two_objects()
    objects = SegmentedObjects.of(found)
    assert torch.equal(objects.masks.areas(), found.masks.flatten(1).sum(1))
    image = torch.rand((1, 120, 160, 3))
    (preview,) = NODE_CLASS_MAPPINGS["PreviewDetections (segment anything)"]().main(image, objects)
    frame = (image[0] * 255).to(torch.uint8)
    assert torch.equal((preview[0] * 255).round().to(torch.uint8), draw_preview(frame, found))
    with pytest.raises(InputError, match="connect the segment node's own input image"):
        NODE_CLASS_MAPPINGS["PreviewDetections (segment anything)"]().main(torch.rand((2, 120, 160, 3)), objects)
    masks, merged, picked, boxes = NODE_CLASS_MAPPINGS["PickObjects (segment anything)"]().main(objects, "ball", 0, "area")
    assert picked.detections.labels == ("red ball",) and torch.equal(masks[0], found.masks[1].float())
    assert torch.equal(merged[0], found.masks[1].float()) and boxes == [[{"x": 110.0, "y": 50.0, "width": 15.0, "height": 10.0,
                                                                        "score": pytest.approx(0.4), "label": "red ball"}]]
    with pytest.raises(InputError, match="must come from a 'GroundingDinoSAMSegment"):
        NODE_CLASS_MAPPINGS["PickObjects (segment anything)"]().main("not objects", "", 1, "score")
