"""Build a ``GroundingDinoDetector`` from an original checkpoint's tensors or a transformers folder (``loaders`` picks which)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoImageProcessor, GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection

from ..errors import ModelFileError
from ..model_files.checkpoints import load_complete_folder, load_exact, without_initial_values
from .convert import config_from_original, fill_unused_model_tensors, rename_original_keys
from .detector import GroundingDinoDetector
from .text import bert_tokenizer

# transformers folders by their config's model_type: the model class and the family's name
FOLDER_FAMILIES = {
    "grounding-dino": (GroundingDinoForObjectDetection, "Grounding DINO"),
    "mm-grounding-dino": (MMGroundingDinoForObjectDetection, "MM-Grounding-DINO"),
}


def describe(config, family: str = "Grounding DINO") -> str:
    swin = config.backbone_config
    size = {96: "Swin-T", 128: "Swin-B", 192: "Swin-L"}.get(swin.embed_dim, f"Swin({swin.embed_dim})")
    return f"{family} {size}"


def detector_from_state(state: dict[str, torch.Tensor], path: Path) -> GroundingDinoDetector:
    """The original release's tensors (``groundingdino_swin*.pth``) as our detector."""
    config = config_from_original(state, str(path))
    model = without_initial_values(lambda: GroundingDinoForObjectDetection(config))
    converted = rename_original_keys(state)
    fill_unused_model_tensors(converted, model.state_dict())
    load_exact(model, converted, path, describe(config))
    return GroundingDinoDetector(model.float().eval(), bert_tokenizer(), describe(config))


def detector_from_folder(path: Path) -> GroundingDinoDetector:
    """A transformers folder: Grounding DINO (``IDEA-Research/grounding-dino-*``) or MM-Grounding-DINO
    (``openmmlab-community/mm_grounding_dino_*``), as ``recognise`` found it. MM-Grounding-DINO frames are
    prepared by the folder's own image processor, as transformers' pipeline does; its text goes through the
    same tokenizer."""
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    model_class, family = FOLDER_FAMILIES[model_type]
    model = load_complete_folder(model_class, path, family)
    processor = None
    if model_type == "mm-grounding-dino":
        try:
            processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise ModelFileError(f"{path} has no image processor settings (preprocessor_config.json or processor_config.json): {err}") from err
    return GroundingDinoDetector(model.eval(), bert_tokenizer(path), describe(model.config, family), image_processor=processor)
