"""Which model family a file or folder holds, decided once, above the families.

Both loaders (``loaders.py``) ask here, then hand the file's tensors, read once, to the one family
that builds it. So no family asks another what a file is: SAM 3 in the SAM socket, a SAM file in
the Grounding DINO socket and a folder's ``model_type`` are all told apart in this one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .dino.convert import is_original_grounding_dino
from .model_files.checkpoints import read_state_dict
from .sam.sam2_convert import is_meta_sam2
from .sam3.convert import is_meta_sam3

GROUNDING_DINO, SAM, SAM2, SAM3, UNKNOWN = "Grounding DINO", "SAM", "SAM 2", "SAM 3", "unknown"
# transformers folders by their config's model_type
FOLDER_FAMILIES = {
    "grounding-dino": GROUNDING_DINO,
    "mm-grounding-dino": GROUNDING_DINO,
    "sam": SAM,
    "sam_hq": SAM,
    "sam2": SAM2,
    "sam2_video": SAM2,
    "edgetam": SAM2,  # SAM 2's interface, built by the same family
    "edgetam_video": SAM2,
    "sam3": SAM3,
    "sam3_video": SAM3,
}


@dataclass(frozen=True)
class Recognised:
    """What a model file or folder is: its family, and what was read to tell."""

    path: Path
    family: str  # GROUNDING_DINO, SAM (also HQ-SAM, MobileSAM), SAM2 (also EdgeTAM), SAM3 or UNKNOWN
    state: dict[str, torch.Tensor] | None = None  # a file's tensors; None for a folder
    model_type: str | None = None  # a folder's config.json model_type; None without one

    @property
    def is_folder(self) -> bool:
        return self.state is None

    @property
    def is_segment_anything(self) -> bool:
        return self.family in (SAM, SAM2)


def recognise(path: str | Path) -> Recognised:
    """The family of a release file (its tensors' names) or a transformers folder (its config's ``model_type``)."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            return Recognised(path, UNKNOWN)
        model_type = str(json.loads(config.read_text()).get("model_type"))
        return Recognised(path, FOLDER_FAMILIES.get(model_type, UNKNOWN), model_type=model_type)
    state = read_state_dict(path)
    return Recognised(path, family_of_state(state), state)


def family_of_state(state: dict[str, torch.Tensor]) -> str:
    if is_meta_sam3(state):
        return SAM3
    if is_original_grounding_dino(state) or any(k.startswith("transformer.encoder.fusion") for k in state):
        return GROUNDING_DINO
    if is_meta_sam2(state):
        return SAM2
    if any(k.startswith(("image_encoder.", "mask_decoder.")) for k in state):
        return SAM
    return UNKNOWN
