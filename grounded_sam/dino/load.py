"""Build a ``GroundingDinoDetector`` from an original checkpoint or a transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GroundingDinoForObjectDetection

from ..checkpoints import load_exact, read_state_dict
from ..devices import resolve_device
from ..errors import ModelFileError, ModelNotFoundError
from .convert import config_from_original, fill_unused_model_tensors, is_original_grounding_dino, rename_original_keys
from .detector import GroundingDinoDetector
from .text import bert_tokenizer


def describe(config) -> str:
    swin = config.backbone_config
    return {96: "Grounding DINO Swin-T", 128: "Grounding DINO Swin-B"}.get(swin.embed_dim, f"Grounding DINO Swin({swin.embed_dim})")


def load_grounding_dino(path: str | Path, device: str | torch.device = "auto") -> GroundingDinoDetector:
    """``groundingdino_swint_ogc.pth`` / ``groundingdino_swinb_cogcoor.pth`` (or their safetensors), or a folder.

    ``device``: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps".
    """
    target = resolve_device(device)  # a device that does not exist fails before the file is read
    return _load(Path(path)).to(target)


def _load(path: Path) -> GroundingDinoDetector:
    if path.is_dir():
        return _load_transformers_folder(path)
    state = read_state_dict(path)
    if not is_original_grounding_dino(state):
        if any(k.startswith(("image_encoder.", "mask_decoder.")) for k in state):
            raise ModelFileError(f"{path} is a Segment Anything checkpoint, not Grounding DINO: choose it in the SAM loader")
        raise ModelFileError(f"{path} is not a Grounding DINO checkpoint (no BERT + fusion-layer weights found)")
    config = config_from_original(state, str(path))
    model = GroundingDinoForObjectDetection(config)
    converted = rename_original_keys(state)
    fill_unused_model_tensors(converted, model.state_dict())
    load_exact(model, converted, path, describe(config))
    return GroundingDinoDetector(model.float().eval(), bert_tokenizer(), describe(config))


def _load_transformers_folder(path: Path) -> GroundingDinoDetector:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(f"{path} is a folder without config.json: it is not a transformers Grounding DINO folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "grounding-dino":
        raise ModelFileError(f"{path} holds a {model_type!r} model, not Grounding DINO")
    try:
        model = GroundingDinoForObjectDetection.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32
        )
    except OSError as err:
        raise ModelFileError(f"cannot load the Grounding DINO model in {path}: {err}") from err
    return GroundingDinoDetector(model.eval(), bert_tokenizer(path), describe(model.config))
