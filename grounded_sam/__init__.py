"""Text-prompted segmentation: Grounding DINO finds boxes, Segment Anything turns them into masks."""

from .dino.detector import DetectionSettings, GroundingDinoDetector
from .dino.load import load_grounding_dino
from .errors import GroundedSamError, InputError, ModelFileError, ModelNotFoundError
from .pipeline import GroundedSam
from .records import Detections
from .sam.load import load_sam
from .sam.segmenter import SamSegmenter
from .steps import RunHooks

__all__ = [
    "DetectionSettings",
    "Detections",
    "GroundedSam",
    "GroundedSamError",
    "GroundingDinoDetector",
    "InputError",
    "ModelFileError",
    "ModelNotFoundError",
    "RunHooks",
    "SamSegmenter",
    "load_grounding_dino",
    "load_sam",
]
