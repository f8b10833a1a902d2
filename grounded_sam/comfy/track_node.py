"""``GroundingDinoSAMTrack``: the segment node's sockets, for a clip, with ids that follow each object."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from ..dino.detector import GroundingDinoDetector
from ..errors import InputError
from ..media.images import to_uint8_frames
from ..pipeline import PRECISION_CHOICES, GroundedSam
from ..runtime.run_hooks import STEPS_PER_FRAME, RunHooks
from ..sam3.detector import Sam3Detector
from ..settings import DetectionSettings
from ..video.frames import Frames, open_video
from . import adapter
from .objects import BOUNDING_BOX, DETECTIONS, SegmentedObjects, as_segmenter


class GroundingDinoSAMTrack:
    """Objects of a prompt tracked through the frames of a video (an IMAGE batch), with SAM 2's or SAM 3's video memory."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam_model": ("SAM_MODEL", {"tooltip": "SAM 2 / 2.1 (Meta's sam2.1_hiera_*.pt) or SAM 3 (sam3.pt): its video memory tracks"}),
                "grounding_dino_model": ("GROUNDING_DINO_MODEL", {}),
                "prompt": ("STRING", {}),
                "threshold": ("FLOAT", {"default": 0.3, "min": 0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "the clip's frames, as a video loader gives them (or connect video)"}),
                "video": ("VIDEO", {"tooltip": "core Load Video's VIDEO instead of images: decoded a frame at a time, "
                                    "so the clip never becomes an IMAGE batch in memory"}),
                "text_threshold": ("FLOAT", {"default": 0.25, "min": 0, "max": 1.0, "step": 0.01}),
                "redetect_every": ("INT", {"default": 10, "min": 1, "max": 100000,
                                           "tooltip": "detect on frame 0 and every N frames; between, SAM 2's or SAM 3's memory follows the objects"}),
                "max_objects": ("INT", {"default": 0, "min": 0, "max": 900, "tooltip": "live tracks at most; 0: up to 50"}),
                "precision": (list(PRECISION_CHOICES), {"default": "fp32", "tooltip": "the detector's precision; the video memory runs in fp32"}),
                "exclude": ("STRING", {"default": "", "tooltip": 'things to leave out, e.g. "shadow": tracked too, and cut out of every mask on every frame'}),
            },
        }

    CATEGORY = "segment_anything"
    FUNCTION = "main"
    RETURN_TYPES = ("MASK", DETECTIONS, "STRING", BOUNDING_BOX)
    RETURN_NAMES = ("MASK", "detections", "detections_json", "bboxes")
    OUTPUT_TOOLTIPS = (
        "one merged mask per frame",
        "every tracked object on every frame, with its track id: ObjectMasks, PickObjects (by track id), PreviewDetections",
        "[{frame, track_id, label, score, box_xyxy, mask_area}, ...]",
        "per frame, [{x, y, width, height, score, label, track_id}, ...] in pixels",
    )

    def main(
        self, sam_model, grounding_dino_model, prompt, threshold, images=None, video=None, text_threshold=0.25, redetect_every=10,
        max_objects=0, precision="fp32", exclude="",
    ):  # fmt: skip
        if not isinstance(grounding_dino_model, (GroundingDinoDetector, Sam3Detector)):
            raise InputError("grounding_dino_model must come from a 'GroundingDinoModelLoader (segment anything)' node")
        segmenter = as_segmenter(sam_model)
        settings = DetectionSettings(box_threshold=threshold, text_threshold=text_threshold, max_detections=max_objects or None)
        frames, total = clip_frames(images, video)
        pipeline = GroundedSam(grounding_dino_model, segmenter, precision)
        hooks = RunHooks(on_progress=adapter.progress_reporter(max(1, total or 0) * STEPS_PER_FRAME), check_cancel=adapter.cancel_check())
        adapter.load_for_inference(grounding_dino_model, segmenter)
        parts: list[SegmentedObjects] = []
        rows: list[dict] = []
        size = None
        with adapter.library_numerics():
            for index, found in enumerate(pipeline.track(frames, prompt, settings, exclude or None, redetect_every, hooks=hooks)):
                size = found.image_size
                found = replace(found, frame_index=torch.full((len(found),), index, dtype=torch.int64))
                parts.append(SegmentedObjects.of(found))  # masks at one bit a pixel until the end
                rows.extend(found.to_json())
        objects = SegmentedObjects.join(parts, len(parts), size)
        return (objects.merged_masks(), objects, json.dumps(rows), objects.bounding_boxes())


def clip_frames(images, video) -> tuple[object, int | None]:
    """The frames to track, one at a time, and how many there are (None: not known before decoding)."""
    if video is not None:
        if images is not None:
            raise InputError("connect either images or video, not both: they would be two clips")
        source, count, window = adapter.video_source(video)
        return open_video(source, "the video", window, count), count
    if images is None:
        raise InputError("connect the clip: images (an IMAGE batch) or video (core Load Video)")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise InputError(f"images must be a non-empty IMAGE batch [B, H, W, C], got {getattr(images, 'shape', type(images).__name__)}")
    total = int(images.shape[0])
    converted = (to_uint8_frames(images[i])[0] for i in range(total))  # one frame converted at a time
    return Frames(converted, total, "the images"), total
