"""The two loaders a user calls: the model a file or folder holds, for the Grounding DINO socket or the SAM socket.

``recognise`` says which family it is; each family builds only its own. SAM 3 serves both sockets:
the same file loaded in both while the first is in use gives one model and one pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .dino.detector import GroundingDinoDetector
from .dino.load import detector_from_folder, detector_from_state
from .errors import ModelFileError, ModelNotFoundError
from .recognise import GROUNDING_DINO, SAM3, Recognised, recognise
from .runtime.devices import resolve_device
from .sam.load import segmenter_from_folder, segmenter_from_state
from .sam.segmenter import SamSegmenter
from .sam3.detector import Sam3Detector
from .sam3.load import load_sam3, loaded_sam3
from .sam3.segmenter import Sam3Segmenter


def load_grounding_dino(path: str | Path, device: str | torch.device = "auto") -> GroundingDinoDetector | Sam3Detector:
    """``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth`` (or their safetensors), or a folder
    (Grounding DINO, MM-Grounding-DINO); SAM 3 (``sam3.pt`` or a ``facebook/sam3`` folder) too, as a text stage
    that also gives masks.

    ``device``: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps".
    """
    target = resolve_device(device)  # a device that does not exist fails before the file is read
    return _detector(Path(path)).to(target)


def load_sam(path: str | Path, device: str | torch.device = "auto") -> SamSegmenter | Sam3Segmenter:
    """A SAM, HQ-SAM, MobileSAM, SAM 2/2.1 or SAM 3 checkpoint (Meta ``.pth``/``.pt``/``.safetensors``)
    or a transformers-format folder.

    ``device``: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps".
    """
    target = resolve_device(device)  # a device that does not exist fails before the file is read
    return _segmenter(Path(path)).to(target)


def _detector(path: Path) -> GroundingDinoDetector | Sam3Detector:
    if (shared := loaded_sam3(path)) is not None:  # the SAM loader's SAM 3, still in use
        return shared
    found = recognise(path)
    if found.family == SAM3:
        return load_sam3(path, found.state)
    if found.family == GROUNDING_DINO:
        return detector_from_folder(path) if found.is_folder else detector_from_state(found.state, path)
    if found.is_folder:
        if found.model_type is None:
            raise ModelNotFoundError(f"{path} is a folder without config.json: it is not a transformers Grounding DINO folder")
        hint = " (a SAM folder: choose it in the SAM loader)" if found.is_segment_anything else ""
        raise ModelFileError(f"{path} holds a {found.model_type!r} model, not Grounding DINO or MM-Grounding-DINO{hint}")
    if found.is_segment_anything:
        raise ModelFileError(f"{path} is a Segment Anything checkpoint, not Grounding DINO: choose it in the SAM loader")
    raise ModelFileError(f"{path} is not a Grounding DINO checkpoint (no BERT + fusion-layer weights found)")


def _segmenter(path: Path) -> SamSegmenter | Sam3Segmenter:
    if (shared := loaded_sam3(path)) is not None:  # the Grounding DINO loader's SAM 3, still in use
        return Sam3Segmenter(shared)
    found = recognise(path)
    if found.family == SAM3:
        return Sam3Segmenter(load_sam3(path, found.state))
    if found.family == GROUNDING_DINO:
        if found.is_folder:
            raise ModelFileError(f"{path} holds a {found.model_type!r} model, not SAM, HQ-SAM or SAM 2 (a box detector: choose it in the Grounding DINO loader)")
        raise ModelFileError(f"{path} is a Grounding DINO checkpoint, not SAM: choose it in the Grounding DINO loader")
    if found.is_folder:
        return _sam_folder(found)
    return segmenter_from_state(found.state, path)  # SAM, SAM 2, or unknown: the SAM family says what is missing


def _sam_folder(found: Recognised) -> SamSegmenter:
    if found.model_type is None:
        raise ModelNotFoundError(f"{found.path} is a folder without config.json: it is not a transformers SAM model folder")
    if not found.is_segment_anything:
        raise ModelFileError(f"{found.path} holds a {found.model_type!r} model, not SAM, HQ-SAM or SAM 2")
    return segmenter_from_folder(found.path, found.model_type)
