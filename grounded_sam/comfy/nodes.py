"""The seed pack's nodes, same ids and sockets, in ComfyUI's classic dict style."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..dino.detector import GroundingDinoDetector
from ..errors import InputError
from ..loaders import load_grounding_dino, load_sam
from ..media.images import to_comfy_image, to_uint8_frames
from ..media.preview import draw_preview
from ..model_files.folders import DINO_FOLDER, SAM_FOLDER, resolve_model
from ..pipeline import PRECISION_CHOICES, GroundedSam
from ..runtime.run_hooks import STEPS_PER_FRAME, RunHooks
from ..sam.segmenter import SamSegmenter
from ..sam3.detector import Sam3Detector
from ..sam3.segmenter import Sam3Segmenter
from ..selection.picking import RANKINGS, pick_indices
from ..settings import DetectionSettings
from . import adapter
from .impact_nodes import NODE_CLASS_MAPPINGS as IMPACT_NODES
from .loaded import shared_model
from .objects import BOUNDING_BOX, DETECTIONS, SegmentedObjects, as_segmenter, segmented
from .points_node import POINTS_TOOLTIP, PointsSegment, clicks_from_sockets
from .refine_node import RefineMask
from .track_node import GroundingDinoSAMTrack

CATEGORY = "segment_anything"


class _ModelLoader:
    """A loader node: pick a file (or a known model, fetched on first use) from one model folder.

    A file that a loader has loaded and ComfyUI still holds is not loaded again (``loaded``); the model
    is loaded on the CPU, and ComfyUI's model management moves it when a node runs.
    """

    FOLDER: str
    CATEGORY = CATEGORY
    FUNCTION = "main"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (adapter.model_choices(cls.FOLDER),)}}

    @staticmethod
    def load(path: Path):
        raise NotImplementedError

    def main(self, model_name: str):
        path = resolve_model(
            model_name,
            self.FOLDER,
            adapter.model_search_dirs(self.FOLDER),
            allow_download=True,
            on_progress=adapter.progress_reporter(1),
        )
        return (shared_model(self.FOLDER, path, self.load),)


class SAMModelLoader(_ModelLoader):
    FOLDER = SAM_FOLDER
    RETURN_TYPES = ("SAM_MODEL",)

    @staticmethod
    def load(path: Path) -> SamSegmenter | Sam3Segmenter:
        return load_sam(path, device="cpu")


class GroundingDinoModelLoader(_ModelLoader):
    FOLDER = DINO_FOLDER
    RETURN_TYPES = ("GROUNDING_DINO_MODEL",)

    @staticmethod
    def load(path: Path) -> GroundingDinoDetector | Sam3Detector:
        return load_grounding_dino(path, device="cpu")


class GroundingDinoSAMSegment:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam_model": ("SAM_MODEL", {}),
                "grounding_dino_model": ("GROUNDING_DINO_MODEL", {}),
                "image": ("IMAGE", {}),
                "prompt": ("STRING", {}),
                "threshold": ("FLOAT", {"default": 0.3, "min": 0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "text_threshold": ("FLOAT", {"default": 0.25, "min": 0, "max": 1.0, "step": 0.01}),
                "max_detections": ("INT", {"default": 0, "min": 0, "max": 900, "tooltip": "0 keeps every detection"}),
                "precision": (
                    list(PRECISION_CHOICES),
                    {"default": "fp32", "tooltip": "fp32: exact, as the original pack; bf16/fp16: faster on GPUs, masks differ slightly; "
                     "auto: bf16 on GPUs that run it fast, else fp32; on a CPU, fp16 runs as fp32, and so does bf16 without native bf16 (AVX512-BF16, AMX)"},
                ),
                "exclude": ("STRING", {"default": "", "tooltip": 'things to leave out, e.g. "bag . shadow": found in the same pass '
                                       "and cut out of every mask; an object that is an excluded one's box again is dropped"}),
                "positive_coords": ("STRING", {"default": "", "tooltip": "clicks that fix the objects found: each refines the object whose box "
                                               "holds it; clicks in no box make one more object. " + POINTS_TOOLTIP}),
                "negative_coords": ("STRING", {"default": "", "tooltip": "clicks off an object, in the same way. " + POINTS_TOOLTIP}),
            },
        }

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("IMAGE", "MASK", DETECTIONS, "STRING", BOUNDING_BOX)
    RETURN_NAMES = ("IMAGE", "MASK", "detections", "detections_json", "bboxes")
    OUTPUT_TOOLTIPS = (
        "the input, black outside the mask",
        "one merged mask per input frame",
        "every object with its mask: connect 'ObjectMasks (segment anything)' for one mask per object",
        "[{frame, label, score, box_xyxy, mask_area}, ...]",
        "per frame, [{x, y, width, height, score, label}, ...] in pixels: ComfyUI's core boxes (DrawBBoxes, CropByBBoxes, ...)",
    )

    def main(
        self, grounding_dino_model, sam_model, image, prompt, threshold, text_threshold=0.25, max_detections=0, precision="fp32",
        exclude="", positive_coords="", negative_coords="",
    ):  # fmt: skip
        if not isinstance(grounding_dino_model, (GroundingDinoDetector, Sam3Detector)):
            raise InputError("grounding_dino_model must come from a 'GroundingDinoModelLoader (segment anything)' node")
        segmenter = as_segmenter(sam_model)
        settings = DetectionSettings(
            box_threshold=threshold, text_threshold=text_threshold, max_detections=max_detections or None
        )
        frames = to_uint8_frames(image)
        clicks = clicks_from_sockets(positive_coords, negative_coords).check_inside(tuple(frames.shape[1:3]))
        pipeline = GroundedSam(grounding_dino_model, segmenter, precision)
        adapter.load_for_inference(*([grounding_dino_model] if pipeline.one_pass() else [grounding_dino_model, segmenter]))
        hooks = RunHooks(on_progress=adapter.progress_reporter(frames.shape[0] * STEPS_PER_FRAME), check_cancel=adapter.cancel_check())
        with adapter.library_numerics():
            found = pipeline.segment(frames, prompt, settings, hooks, exclude, clicks if len(clicks) else None)
        merged = found.merged_masks()
        rgb = to_comfy_image(frames) * merged.unsqueeze(-1)
        objects = SegmentedObjects.of(found)
        return (rgb, merged.float(), objects, json.dumps(found.to_json()), objects.bounding_boxes())


class ObjectMasks:
    """One mask per object found by the segment node, in its order (frame by frame, best score first)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"detections": (DETECTIONS, {})}}

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("object_masks",)

    def main(self, detections: SegmentedObjects):
        return (segmented(detections).object_masks(),)


class PreviewDetections:
    """The frames with each object's mask in its own colour, its box and "label score" drawn on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "the image that went into the segment node"}), "detections": (DETECTIONS, {})}}

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)

    def main(self, image, detections: SegmentedObjects):
        objects = segmented(detections)
        frames = to_uint8_frames(image)
        found = objects.detections
        if frames.shape[0] != found.num_frames or tuple(frames.shape[1:3]) != found.image_size:
            raise InputError(
                f"the image ({frames.shape[0]} frame(s) of {frames.shape[1]}x{frames.shape[2]}) is not the one the objects were found in "
                f"({found.num_frames} of {found.image_size[0]}x{found.image_size[1]}): connect the segment node's own input image"
            )
        return (to_comfy_image(torch.stack([draw_preview(frames[i], objects.frame(i)) for i in range(frames.shape[0])])),)


class PickObjects:
    """Some of the segment node's objects: of one label, the best k by score, or the k largest, frame by frame."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detections": (DETECTIONS, {}),
                "label": ("STRING", {"default": "", "tooltip": 'keep objects whose label holds these words ("ball", or "ball . dog"); empty keeps all'}),
                "top_k": ("INT", {"default": 1, "min": 0, "max": 900, "tooltip": "per frame; 0 keeps every match"}),
                "rank_by": (list(RANKINGS), {"default": "score", "tooltip": "score: the most confident first; area: the largest mask first"}),
            },
            "optional": {
                "track_ids": ("STRING", {"default": "", "tooltip": 'tracked clips: keep only these track ids, e.g. "1, 4"; empty keeps all'}),
            },
        }

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("MASK", "MASK", DETECTIONS, BOUNDING_BOX)
    RETURN_NAMES = ("object_masks", "mask", "detections", "bboxes")
    OUTPUT_TOOLTIPS = (
        "one mask per picked object, frame by frame, best first (one all-zero mask when none)",
        "per frame, the picked objects in one mask",
        "the picked objects, for ObjectMasks, PreviewDetections or another PickObjects",
        "the picked objects' boxes in ComfyUI's core layout",
    )

    def main(self, detections: SegmentedObjects, label: str, top_k: int, rank_by: str, track_ids: str = ""):
        objects = segmented(detections)
        picked = objects.select(pick_indices(objects.detections, objects.masks.areas(), label, top_k, rank_by, track_ids))
        return (picked.object_masks(), picked.merged_masks(), picked, picked.bounding_boxes())


class InvertMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("MASK",)

    def main(self, mask):
        return (1.0 - mask,)


class IsMaskEmptyNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("NUMBER",)
    RETURN_NAMES = ("boolean_number",)

    def main(self, mask):
        return (int(torch.all(mask == 0).item()),)


NODE_CLASS_MAPPINGS = {
    "SAMModelLoader (segment anything)": SAMModelLoader,
    "GroundingDinoModelLoader (segment anything)": GroundingDinoModelLoader,
    "GroundingDinoSAMSegment (segment anything)": GroundingDinoSAMSegment,
    "InvertMask (segment anything)": InvertMask,
    "IsMaskEmpty": IsMaskEmptyNode,
    "ObjectMasks (segment anything)": ObjectMasks,
    "PreviewDetections (segment anything)": PreviewDetections,
    "PickObjects (segment anything)": PickObjects,
    "RefineMask (segment anything)": RefineMask,
    "PointsSegment (segment anything)": PointsSegment,
    "GroundingDinoSAMTrack (segment anything)": GroundingDinoSAMTrack,
    **IMPACT_NODES,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IsMaskEmpty": "IsMaskEmpty",
    "ObjectMasks (segment anything)": "ObjectMasks (segment anything)",
    "PreviewDetections (segment anything)": "PreviewDetections (segment anything)",
    "PickObjects (segment anything)": "PickObjects (segment anything)",
    "RefineMask (segment anything)": "RefineMask (segment anything)",
    "PointsSegment (segment anything)": "PointsSegment (segment anything)",
    "GroundingDinoSAMTrack (segment anything)": "GroundingDinoSAMTrack (segment anything)",
    **{name: name for name in IMPACT_NODES},
}
