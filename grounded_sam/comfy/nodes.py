"""The seed pack's nodes, same ids and sockets, in ComfyUI's classic dict style."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from ..dino.detector import DetectionSettings, GroundingDinoDetector
from ..dino.load import load_grounding_dino
from ..errors import InputError
from ..images import to_comfy_image, to_uint8_frames
from ..model_files import DINO_FOLDER, SAM_FOLDER, resolve_model
from ..pipeline import PRECISIONS, GroundedSam
from ..records import Detections, PackedMasks
from ..sam.load import load_sam, segmenter_from_meta_module
from ..sam.segmenter import SamSegmenter
from ..steps import STEPS_PER_FRAME, RunHooks
from . import adapter

CATEGORY = "segment_anything"


@lru_cache(maxsize=4)
def _cached_sam(path: str, mtime: float) -> SamSegmenter:
    return load_sam(path)


@lru_cache(maxsize=2)
def _cached_dino(path: str, mtime: float) -> GroundingDinoDetector:
    return load_grounding_dino(path)


class _ModelLoader:
    """A loader node: pick a file (or a known model, fetched on first use) from one model folder.

    Loaded models are kept per path and modification time, so re-running a workflow does not reload.
    """

    FOLDER: str
    CATEGORY = CATEGORY
    FUNCTION = "main"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (adapter.model_choices(cls.FOLDER),)}}

    @staticmethod
    def load(path: str, mtime: float):
        raise NotImplementedError

    def main(self, model_name: str):
        path = resolve_model(
            model_name,
            self.FOLDER,
            adapter.model_search_dirs(self.FOLDER),
            allow_download=True,
            on_progress=adapter.progress_reporter(1),
        )
        return (self.load(str(path), path.stat().st_mtime),)


class SAMModelLoader(_ModelLoader):
    FOLDER = SAM_FOLDER
    RETURN_TYPES = ("SAM_MODEL",)
    load = staticmethod(_cached_sam)


class GroundingDinoModelLoader(_ModelLoader):
    FOLDER = DINO_FOLDER
    RETURN_TYPES = ("GROUNDING_DINO_MODEL",)
    load = staticmethod(_cached_dino)


def as_segmenter(sam_model) -> SamSegmenter:
    """Ours, or a ``segment_anything`` model from another pack (Impact Pack's SAMLoader) converted once."""
    if isinstance(sam_model, SamSegmenter):
        return sam_model
    if isinstance(sam_model, torch.nn.Module) and all(hasattr(sam_model, a) for a in ("image_encoder", "mask_decoder")):
        converted = getattr(sam_model, "_grounded_sam_segmenter", None)
        if converted is None:
            converted = segmenter_from_meta_module(sam_model)
            sam_model._grounded_sam_segmenter = converted
        return converted
    raise InputError(
        f"sam_model is a {type(sam_model).__name__}, not a SAM model this node can use: "
        "connect a 'SAMModelLoader (segment anything)' node"
    )


DETECTIONS = "GROUNDED_SAM_DETECTIONS"


@dataclass(frozen=True)
class SegmentedObjects:
    """What flows on a ``GROUNDED_SAM_DETECTIONS`` socket: the objects, their masks at one bit a pixel.

    ComfyUI keeps every node output in its cache whether or not anything reads it; float32
    masks for hundreds of objects would cost gigabytes there. ``ObjectMasks`` unpacks them.
    """

    detections: Detections  # masks=None: they are in ``masks``
    masks: PackedMasks

    @classmethod
    def of(cls, found: Detections) -> SegmentedObjects:
        return cls(replace(found, masks=None), PackedMasks.pack(found.masks))

    def object_masks(self) -> torch.Tensor:
        """float32 ``[N, H, W]``, one per object; one all-zero mask when there is none (ComfyUI has no empty batch)."""
        if len(self.masks) == 0:
            return torch.zeros((1, *self.detections.image_size))
        return self.masks.unpack().float()


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
                "precision": (list(PRECISIONS), {"default": "fp32", "tooltip": "bf16/fp16: faster, masks differ slightly"}),
            },
        }

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("IMAGE", "MASK", DETECTIONS, "STRING")
    RETURN_NAMES = ("IMAGE", "MASK", "detections", "detections_json")
    OUTPUT_TOOLTIPS = (
        "the input, black outside the mask",
        "one merged mask per input frame",
        "every object with its mask: connect 'ObjectMasks (segment anything)' for one mask per object",
        "[{frame, label, score, box_xyxy, mask_area}, ...]",
    )

    def main(
        self, grounding_dino_model, sam_model, image, prompt, threshold, text_threshold=0.25, max_detections=0, precision="fp32"
    ):
        if not isinstance(grounding_dino_model, GroundingDinoDetector):
            raise InputError("grounding_dino_model must come from a 'GroundingDinoModelLoader (segment anything)' node")
        segmenter = as_segmenter(sam_model)
        settings = DetectionSettings(
            box_threshold=threshold, text_threshold=text_threshold, max_detections=max_detections or None
        )
        frames = to_uint8_frames(image)
        adapter.load_for_inference(grounding_dino_model, segmenter)
        hooks = RunHooks(on_progress=adapter.progress_reporter(frames.shape[0] * STEPS_PER_FRAME), check_cancel=adapter.cancel_check())
        found = GroundedSam(grounding_dino_model, segmenter, precision).segment(frames, prompt, settings, hooks)
        merged = found.merged_masks()
        rgb = to_comfy_image(frames) * merged.unsqueeze(-1)
        return (rgb, merged.float(), SegmentedObjects.of(found), json.dumps(found.to_json()))


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
        if not isinstance(detections, SegmentedObjects):
            raise InputError("detections must come from a 'GroundingDinoSAMSegment (segment anything)' node")
        return (detections.object_masks(),)


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
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IsMaskEmpty": "IsMaskEmpty",
    "ObjectMasks (segment anything)": "ObjectMasks (segment anything)",
}
