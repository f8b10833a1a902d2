"""Build a ``SamSegmenter`` from whatever SAM file or folder a user has."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Sam2Config, Sam2Model, SamConfig, SamHQConfig, SamHQModel, SamModel
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam_hq.configuration_sam_hq import SamHQMaskDecoderConfig, SamHQVisionConfig

from ..checkpoints import load_complete_folder, load_exact, read_state_dict, require_complete, without_initial_values
from ..devices import resolve_device
from ..errors import ModelFileError, ModelNotFoundError
from ..sam3.convert import is_meta_sam3
from ..sam3.load import is_sam3_folder, load_sam3, loaded_sam3
from ..sam3.segmenter import Sam3Segmenter
from .convert import SamArchitecture, detect_architecture, rename_meta_keys
from .sam2_convert import Sam2Architecture, detect_sam2_architecture, is_meta_sam2, release_size, rename_sam2_keys
from .sam2_segmenter import Sam2Segmenter
from .segmenter import SamSegmenter
from .tiny_vit import TinyViTEncoder

# A placeholder ViT for MobileSAM: SamModel insists on building one, we swap in TinyViT.
_STUB_VISION = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 1, "global_attn_indexes": [0], "mlp_dim": 16}


def build_sam_model(arch: SamArchitecture) -> SamModel | SamHQModel:
    """An uninitialised-weights model of exactly the checkpoint's architecture."""
    return without_initial_values(lambda: _sam_model(arch))


def _sam_model(arch: SamArchitecture) -> SamModel | SamHQModel:
    vision = _STUB_VISION if arch.encoder == "tiny_vit" else arch.vision
    if arch.hq:
        config = SamHQConfig(
            vision_config=SamHQVisionConfig(**vision).to_dict(),
            mask_decoder_config=SamHQMaskDecoderConfig(vit_dim=vision["hidden_size"]).to_dict(),
        )
        model: SamModel | SamHQModel = SamHQModel(config)
    else:
        model = SamModel(SamConfig(vision_config=SamVisionConfig(**vision).to_dict()))
    if arch.tiny_vit is not None:
        model.vision_encoder = TinyViTEncoder(arch.tiny_vit)
    return model.eval()


def build_sam2_model(arch: Sam2Architecture) -> Sam2Model:
    """An uninitialised-weights SAM 2 image model of exactly the checkpoint's size."""
    backbone = arch.backbone
    vision = {
        "backbone_config": {"model_type": "sam2_hiera_det_model", **backbone},
        "backbone_channel_list": backbone["embed_dim_per_stage"][::-1],
    }
    return without_initial_values(lambda: Sam2Model(Sam2Config(vision_config=vision))).eval()


def load_sam(path: str | Path, device: str | torch.device = "auto") -> SamSegmenter | Sam3Segmenter:
    """A SAM, HQ-SAM, MobileSAM, SAM 2/2.1 or SAM 3 checkpoint (Meta ``.pth``/``.pt``/``.safetensors``)
    or a transformers-format folder.

    ``device``: "auto" (CUDA, then MPS, then the CPU), "cpu", "cuda", "cuda:N" or "mps".
    """
    target = resolve_device(device)  # a device that does not exist fails before the file is read
    return _load(Path(path)).to(target)


def _load(path: Path) -> SamSegmenter | Sam3Segmenter:
    if (shared := loaded_sam3(path)) is not None:  # the Grounding DINO loader's SAM 3, still in use
        return Sam3Segmenter(shared)
    if path.is_dir():
        return Sam3Segmenter(load_sam3(path)) if is_sam3_folder(path) else _load_transformers_folder(path)
    state = read_state_dict(path)
    if is_meta_sam3(state):
        return Sam3Segmenter(load_sam3(path, state))
    if "bert.embeddings.word_embeddings.weight" in state or any(k.startswith("transformer.encoder.fusion") for k in state):
        raise ModelFileError(f"{path} is a Grounding DINO checkpoint, not SAM: choose it in the Grounding DINO loader")
    if is_meta_sam2(state):
        return _segmenter_from_sam2_state(state, path)
    return _segmenter_from_meta_state(state, path)


def _segmenter_from_sam2_state(state: dict[str, torch.Tensor], source: Path) -> Sam2Segmenter:
    arch = detect_sam2_architecture(state, str(source))
    model = build_sam2_model(arch)
    renamed = rename_sam2_keys(state)
    require_complete(model, renamed, source, arch.name)
    load_exact(model, renamed, source, arch.name)
    return Sam2Segmenter(model.float(), arch.name)


def segmenter_from_meta_module(module: torch.nn.Module) -> SamSegmenter:
    """A ``segment_anything``-style model object (as other node packs pass around) as our segmenter."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return _segmenter_from_meta_state(state, Path(f"<{type(module).__name__} from another node>"))


def _segmenter_from_meta_state(state: dict[str, torch.Tensor], source: Path) -> SamSegmenter:
    arch = detect_architecture(state, str(source))
    model = build_sam_model(arch)
    load_exact(model, rename_meta_keys(state, arch), source, arch.name)
    return SamSegmenter(model.float(), arch.name)


def _load_transformers_folder(path: Path) -> SamSegmenter:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(f"{path} is a folder without config.json: it is not a transformers SAM model folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    classes = {"sam": SamModel, "sam_hq": SamHQModel, "sam2": Sam2Model, "sam2_video": Sam2Model}
    if model_type not in classes:
        hint = " (a box detector: choose it in the Grounding DINO loader)" if "grounding" in str(model_type) else ""
        raise ModelFileError(f"{path} holds a {model_type!r} model, not SAM, HQ-SAM or SAM 2{hint}")
    model = load_complete_folder(classes[model_type], path, "SAM")
    if isinstance(model, Sam2Model):
        backbone = model.config.vision_config.backbone_config
        return Sam2Segmenter(model, f"SAM 2 {release_size(backbone.hidden_size, backbone.blocks_per_stage)}")
    size = {768: "B", 1024: "L", 1280: "H"}.get(model.config.vision_config.hidden_size, "?")
    return SamSegmenter(model, f"{'HQ-SAM' if model_type == 'sam_hq' else 'SAM'} ViT-{size}")

