"""Test-only nodes for the Impact Pack cases (copied beside Impact Pack in the suite's servers, never shipped).

``GroundedSamTestSegsJson`` shows what a SEGS value holds: each SEG's label, confidence, regions and
its mask as packed bits. ``GroundedSamTestFaceDetailerSegs`` runs Impact's own ``FaceDetailer``
code path (``FaceDetailer.enhance_face``: its detectors, ``setAux('face')``, its SEGM step) with the
sampler step (``DetailerForEach.do_detail``, which needs a diffusion model) replaced by a recorder,
and shows the SEGS the sampler would have been given.
"""

import base64
import json

import numpy as np


def segs_json(segs) -> str:
    (height, width), items = segs
    rows = []
    for seg in items:
        mask = np.asarray(seg.cropped_mask) > 0.5
        rows.append({
            "type": type(seg).__name__,
            "label": seg.label,
            "confidence": float(seg.confidence),
            "crop_region": [int(v) for v in seg.crop_region],
            "bbox": [float(v) for v in seg.bbox],
            "mask_shape": list(mask.shape),
            "mask_bits": base64.b64encode(np.packbits(mask).tobytes()).decode(),
            "cropped_image_shape": None if seg.cropped_image is None else list(seg.cropped_image.shape),
        })  # fmt: skip
    return json.dumps({"size": [int(height), int(width)], "segs": rows})


class SegsJson:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"segs": ("SEGS",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def main(self, segs):
        text = segs_json(segs)
        return {"ui": {"text": [text]}, "result": (text,)}


class FaceDetailerSegs:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "bbox_detector": ("BBOX_DETECTOR",),
                "bbox_threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.00001}),
                "bbox_dilation": ("INT", {"default": 10, "min": -512, "max": 512}),
                "bbox_crop_factor": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 10, "step": 0.1}),
                "drop_size": ("INT", {"default": 10, "min": 1, "max": 8192}),
            },
            "optional": {"segm_detector": ("SEGM_DETECTOR",)},
        }

    RETURN_TYPES = ("MASK", "STRING")
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def main(self, image, bbox_detector, bbox_threshold, bbox_dilation, bbox_crop_factor, drop_size, segm_detector=None):
        from impact.impact_pack import DetailerForEach, FaceDetailer

        given = []

        def sampler_step(image, segs, *args, **kwargs):  # what DetailerForEach.do_detail receives
            given.append(segs)
            return image, None, [], [], [], segs

        original = DetailerForEach.__dict__["do_detail"]
        DetailerForEach.do_detail = staticmethod(sampler_step)
        try:
            # FaceDetailer's defaults for everything the sampler would use; model, clip, vae and conditioning are never reached
            _, _, _, mask, _ = FaceDetailer.enhance_face(
                image, None, None, None, 512, True, 1024, 0, 20, 8.0, "euler", "normal", None, None, 0.5, 5, True, True,
                bbox_threshold, bbox_dilation, bbox_crop_factor, "center-1", 0, 0.93, 0, 0.7, "False", drop_size,
                bbox_detector, segm_detector=segm_detector,
            )  # fmt: skip
        finally:
            DetailerForEach.do_detail = original
        text = json.dumps({"sampler_calls": len(given), "segs": json.loads(segs_json(given[0])) if given else None})
        return {"ui": {"text": [text]}, "result": (mask.unsqueeze(0) if mask.dim() == 2 else mask, text)}


NODE_CLASS_MAPPINGS = {"GroundedSamTestSegsJson": SegsJson, "GroundedSamTestFaceDetailerSegs": FaceDetailerSegs}
