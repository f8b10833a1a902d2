"""Build a ``GroundingDinoDetector`` from an original checkpoint or a transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoImageProcessor, GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection

from ..checkpoints import load_complete_folder, load_exact, read_state_dict, without_initial_values
from ..devices import resolve_device
from ..errors import ModelFileError, ModelNotFoundError
from ..sam3.convert import is_meta_sam3
from ..sam3.detector import Sam3Detector
from ..sam3.load import is_sam3_folder, load_sam3, loaded_sam3
from .convert import config_from_original, fill_unused_model_tensors, is_original_grounding_dino, rename_original_keys
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


def load_grounding_dino(path: str | Path, device: str | torch.device = "auto") -> GroundingDinoDetector | Sam3Detector:
    """``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth`` (or their safetensors), or a folder;
    SAM 3 (``sam3.pt`` or a ``facebook/sam3`` folder) too, as a text stage that also gives masks.

    ``device``: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps".
    """
    target = resolve_device(device)  # a device that does not exist fails before the file is read
    return _load(Path(path)).to(target)


def _load(path: Path) -> GroundingDinoDetector | Sam3Detector:
    if (shared := loaded_sam3(path)) is not None:  # the SAM loader's SAM 3, still in use
        return shared
    if path.is_dir():
        return load_sam3(path) if is_sam3_folder(path) else _load_transformers_folder(path)
    state = read_state_dict(path)
    if is_meta_sam3(state):
        return load_sam3(path, state)
    if not is_original_grounding_dino(state):
        if any(k.startswith(("image_encoder.", "mask_decoder.")) for k in state):
            raise ModelFileError(f"{path} is a Segment Anything checkpoint, not Grounding DINO: choose it in the SAM loader")
        raise ModelFileError(f"{path} is not a Grounding DINO checkpoint (no BERT + fusion-layer weights found)")
    config = config_from_original(state, str(path))
    model = without_initial_values(lambda: GroundingDinoForObjectDetection(config))
    converted = rename_original_keys(state)
    fill_unused_model_tensors(converted, model.state_dict())
    load_exact(model, converted, path, describe(config))
    return GroundingDinoDetector(model.float().eval(), bert_tokenizer(), describe(config))


def _load_transformers_folder(path: Path) -> GroundingDinoDetector:
    """A transformers folder: Grounding DINO (``IDEA-Research/grounding-dino-*``) or MM-Grounding-DINO
    (``openmmlab-community/mm_grounding_dino_*``). MM-Grounding-DINO frames are prepared by the folder's
    own image processor, as transformers' pipeline does; its text goes through the same tokenizer."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(f"{path} is a folder without config.json: it is not a transformers Grounding DINO folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in FOLDER_FAMILIES:
        hint = " (a SAM folder: choose it in the SAM loader)" if str(model_type).startswith(("sam", "sam2")) else ""
        raise ModelFileError(f"{path} holds a {model_type!r} model, not Grounding DINO or MM-Grounding-DINO{hint}")
    model_class, family = FOLDER_FAMILIES[model_type]
    model = load_complete_folder(model_class, path, family)
    processor = None
    if model_type == "mm-grounding-dino":
        try:
            processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise ModelFileError(f"{path} has no image processor settings (preprocessor_config.json or processor_config.json): {err}") from err
    return GroundingDinoDetector(model.eval(), bert_tokenizer(path), describe(model.config, family), image_processor=processor)
