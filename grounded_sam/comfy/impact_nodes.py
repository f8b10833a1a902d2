"""Nodes that plug into Impact Pack: our objects as SEGS, and text-prompted BBOX / SEGM detectors.

Impact's detailers take SEGS or a detector object, never a MASK list. ``ToSEGS`` turns the segment
node's objects into SEGS with their labels, scores and masks; the provider gives Impact a
``BBOX_DETECTOR`` and a ``SEGM_DETECTOR`` whose ``detect`` runs Grounding DINO (and SAM), so
``FaceDetailer`` and ``BBOX Detector (SEGS)`` work from a text prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..dino.detector import GroundingDinoDetector
from ..errors import InputError
from ..media.images import to_uint8_frames
from ..pipeline import PRECISION_CHOICES, GroundedSam
from ..records import Detections
from ..runtime.run_hooks import STEPS_PER_FRAME, RunHooks
from ..sam3.detector import Sam3Detector
from ..sam3.segmenter import Sam3Segmenter
from ..settings import DetectionSettings
from . import adapter
from .objects import DETECTIONS, as_segmenter, segmented
from .segs import combined_mask, to_segs

CATEGORY = "segment_anything"
SEGS_INPUTS = {
    "crop_factor": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 100, "step": 0.1, "tooltip": "the crop around each object: its box's sides times this"}),
    "dilation": ("INT", {"default": 0, "min": -512, "max": 512, "step": 1, "tooltip": "grow each mask with a square of this side in pixels, as Impact's detectors do (shrink when negative)"}),
    "drop_size": ("INT", {"default": 10, "min": 1, "max": 16384, "step": 1, "tooltip": "leave out objects whose box is not wider and taller than this"}),
}


class ToSEGS:
    """One frame's objects from the segment node as Impact Pack SEGS: one SEG per object, with its label, score and mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"detections": (DETECTIONS, {}), **SEGS_INPUTS},
            "optional": {
                "image": ("IMAGE", {"tooltip": "the segment node's input: fills each SEG's cropped image (SEGSPreview shows it)"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "SEGS hold one image: which frame of a batch"}),
            },
        }

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("SEGS",)
    RETURN_NAMES = ("segs",)
    OUTPUT_TOOLTIPS = ("Impact Pack SEGS for the detailers and the SEGS nodes",)

    def main(self, detections, crop_factor: float, dilation: int, drop_size: int, image=None, frame: int = 0):
        objects = segmented(detections)
        frames = objects.detections.num_frames
        if not 0 <= frame < frames:
            raise InputError(f"frame {frame} does not exist: the detections have {frames} frame(s), numbered from 0")
        picture = None
        if image is not None:
            if image.shape[0] != frames:
                raise InputError(f"the image has {image.shape[0]} frame(s) and the detections {frames}: connect the segment node's input")
            picture = image[frame : frame + 1].float()
        return (to_segs(objects.frame(frame), crop_factor, dilation, drop_size, picture),)


class Asked:
    """What Impact's nodes asked one provider's detectors for with ``setAux``, shared by the pair.

    ``FaceDetailer`` asks its box detector for "face" and then runs its mask detector without
    asking; with an empty prompt, both should look for faces.
    """

    def __init__(self) -> None:
        self.now: str | None = None
        self.last: str | None = None

    def set(self, value) -> None:
        self.now = value if isinstance(value, str) and value.strip() else None
        self.last = self.now or self.last

    def prompt(self) -> str:
        return (self.now or self.last or "").strip()


class TextDetector:
    """Impact Pack's ``BBOX_DETECTOR`` / ``SEGM_DETECTOR`` protocol over our pipeline.

    ``threshold`` 0 takes the box threshold Impact's node passes (``bbox_threshold``); an empty
    prompt takes what the node asks for with ``setAux`` (``FaceDetailer`` asks for "face"), see ``Asked``.
    A box detector's SEGS hold each filled box, a mask detector's each object's mask.
    """

    def __init__(
        self, pipeline: GroundedSam, prompt: str, settings: DetectionSettings, threshold: float, exclude: str, masks: bool, asked: Asked
    ) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.prompt = prompt.strip()
        self.settings = settings
        self.threshold = threshold
        self.exclude = exclude
        self.masks = masks
        self.asked = asked

    def setAux(self, x) -> None:  # noqa: N802 - Impact's name
        self.asked.set(x)

    def find(self, image: torch.Tensor, threshold: float) -> Detections:
        """The objects in Impact's one-image IMAGE ``[1, H, W, 3]``, with masks for a mask detector."""
        frames = to_uint8_frames(image)
        if frames.shape[0] != 1:
            raise InputError(f"a detector takes one image at a time, got a batch of {frames.shape[0]}: Impact's nodes pass one")
        prompt = self.prompt or self.asked.prompt()
        if not prompt:
            raise InputError('the provider\'s prompt is empty and this node asks for nothing: write a prompt, e.g. "face . hand"')
        pipeline = self.pipeline
        if self.masks and pipeline.segmenter is None and not pipeline.one_pass():
            raise InputError("SEGM_DETECTOR needs masks: connect a sam_model to the provider, or use its BBOX_DETECTOR")
        box_threshold = self.threshold or threshold
        settings = DetectionSettings(box_threshold, self.settings.text_threshold, max_detections=self.settings.max_detections)
        used = [pipeline.detector] + ([pipeline.segmenter] if self.masks and not pipeline.one_pass() else [])
        adapter.load_for_inference(*used)
        hooks = RunHooks(on_progress=adapter.progress_reporter(STEPS_PER_FRAME), check_cancel=adapter.cancel_check())
        with adapter.library_numerics():
            run = pipeline.segment if self.masks else pipeline.detect
            return run(frames, prompt, settings, hooks, self.exclude)

    def detect(self, image, threshold, dilation, crop_factor, drop_size=1, detailer_hook=None):
        found = self.find(image, threshold)
        adjust: Callable | None = getattr(detailer_hook, "post_crop_region", None)
        segs = to_segs(found, crop_factor, dilation, drop_size, image.float(), boxes_only=not self.masks, adjust_region=adjust)
        if detailer_hook is not None and hasattr(detailer_hook, "post_detection"):
            segs = detailer_hook.post_detection(segs)
        return segs

    def detect_combined(self, image, threshold, dilation):
        return combined_mask(self.find(image, threshold), dilation, boxes_only=not self.masks)


class GroundingDinoDetectorProvider:
    """Text-prompted detectors for Impact Pack's nodes (``FaceDetailer``, ``BBOX Detector (SEGS)``, ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "grounding_dino_model": ("GROUNDING_DINO_MODEL", {}),
                "prompt": ("STRING", {"default": "", "tooltip": 'what to detect, e.g. "face . hand"; empty: what the node asks for '
                                      "(FaceDetailer asks for \"face\")"}),  # fmt: skip
                "text_threshold": ("FLOAT", {"default": 0.25, "min": 0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "sam_model": ("SAM_MODEL", {"tooltip": "for SEGM_DETECTOR: the masks come from SAM (not needed with SAM 3 as the detector)"}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0, "max": 1.0, "step": 0.01,
                                        "tooltip": "the box threshold; 0 takes the threshold of the node that runs the detector"}),  # fmt: skip
                "max_detections": ("INT", {"default": 0, "min": 0, "max": 900, "tooltip": "0 keeps every detection"}),
                "precision": (list(PRECISION_CHOICES), {"default": "fp32"}),
                "exclude": ("STRING", {"default": "", "tooltip": 'things to leave out, e.g. "hat . shadow"'}),
            },
        }

    CATEGORY = CATEGORY
    FUNCTION = "main"
    RETURN_TYPES = ("BBOX_DETECTOR", "SEGM_DETECTOR")
    RETURN_NAMES = ("BBOX_DETECTOR", "SEGM_DETECTOR")

    def main(self, grounding_dino_model, prompt, text_threshold, sam_model=None, threshold=0.0, max_detections=0, precision="fp32", exclude=""):
        if not isinstance(grounding_dino_model, (GroundingDinoDetector, Sam3Detector)):
            raise InputError("grounding_dino_model must come from a 'GroundingDinoModelLoader (segment anything)' node")
        segmenter = None if sam_model is None else as_segmenter(sam_model)
        if segmenter is None and isinstance(grounding_dino_model, Sam3Detector):
            segmenter = Sam3Segmenter(grounding_dino_model)  # SAM 3's own masks: one pass
        pipeline = GroundedSam(grounding_dino_model, segmenter, precision)
        settings = DetectionSettings(0.3, text_threshold, max_detections=max_detections or None)  # a bad value fails here, not mid-detailer
        for text in (prompt, exclude):
            if not isinstance(text, str):
                raise InputError(f"prompt and exclude must be text, got {type(text).__name__}")
        asked = Asked()
        return tuple(TextDetector(pipeline, prompt, settings, threshold, exclude, masks, asked) for masks in (False, True))


NODE_CLASS_MAPPINGS = {
    "ToSEGS (segment anything)": ToSEGS,
    "GroundingDinoDetectorProvider (segment anything)": GroundingDinoDetectorProvider,
}
