"""Build a ``SamSegmenter`` from a SAM release file's tensors or a transformers folder (``loaders`` picks which)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    EdgeTamModel,
    EdgeTamVideoModel,
    Sam2Config,
    Sam2Model,
    Sam2VideoModel,
    SamConfig,
    SamHQConfig,
    SamHQModel,
    SamModel,
)
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam_hq.configuration_sam_hq import SamHQMaskDecoderConfig, SamHQVisionConfig

from ..model_files.checkpoints import load_complete_folder, load_exact, require_complete, without_initial_values
from .convert import SamArchitecture, detect_architecture, rename_meta_keys
from .edgetam_convert import NAME as EDGETAM
from .edgetam_convert import edgetam_video_config, is_meta_edgetam, rename_edgetam_keys
from .edgetam_tracker import EdgeTamTracker
from .sam2_convert import Sam2Architecture, detect_sam2_architecture, is_meta_sam2, release_size
from .sam2_names import rename_sam2_keys, rename_sam2_video_keys
from .sam2_segmenter import Sam2Segmenter
from .sam2_tracker import Sam2Tracker
from .sam2_video_model import build_edgetam_video_model, build_video_model, image_model_of
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


def segmenter_from_state(state: dict[str, torch.Tensor], source: Path) -> SamSegmenter:
    """A Meta release file's tensors: EdgeTAM, SAM 2 / 2.1, or SAM, HQ-SAM and MobileSAM (told apart by their tensors)."""
    if is_meta_edgetam(state):  # before SAM 2: it carries SAM 2's heads under SAM 2's names
        return _segmenter_from_edgetam_state(state, source)
    if is_meta_sam2(state):
        return _segmenter_from_sam2_state(state, source)
    return _segmenter_from_meta_state(state, source)


def _segmenter_from_sam2_state(state: dict[str, torch.Tensor], source: Path) -> Sam2Segmenter:
    arch = detect_sam2_architecture(state, str(source))
    model = build_sam2_model(arch)
    renamed = rename_sam2_keys(state)
    require_complete(model, renamed, source, arch.name)
    load_exact(model, renamed, source, arch.name)
    model = model.float()
    video = build_video_model(model, {k: v.float() for k, v in rename_sam2_video_keys(state).items()}, source, arch.name)
    return Sam2Segmenter(model, arch.name, video)


def _segmenter_from_edgetam_state(state: dict[str, torch.Tensor], source: Path) -> Sam2Segmenter:
    config = edgetam_video_config(state, str(source))
    video = build_edgetam_video_model(config, {k: v.float() for k, v in rename_edgetam_keys(state).items()}, source, EDGETAM)
    return Sam2Segmenter(image_model_of(video, source, EDGETAM), EDGETAM, video)


def segmenter_from_meta_module(module: torch.nn.Module) -> SamSegmenter:
    """A ``segment_anything``-style model object (as other node packs pass around) as our segmenter."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return _segmenter_from_meta_state(state, Path(f"<{type(module).__name__} from another node>"))


def _segmenter_from_meta_state(state: dict[str, torch.Tensor], source: Path) -> SamSegmenter:
    arch = detect_architecture(state, str(source))
    model = build_sam_model(arch)
    load_exact(model, rename_meta_keys(state, arch), source, arch.name)
    return SamSegmenter(model.float(), arch.name)


# a sam2_video folder loads as Sam2Tracker: its memory encoded per object, as Meta does (sam2_tracker.py)
FOLDER_CLASSES = {
    "sam": SamModel,
    "sam_hq": SamHQModel,
    "sam2": Sam2Model,
    "sam2_video": Sam2Tracker,
    "edgetam": EdgeTamModel,
    "edgetam_video": EdgeTamTracker,  # encodes each object's memory apart already; its tracked objects batched
}


def segmenter_from_folder(path: Path, model_type: str) -> SamSegmenter:
    """A transformers SAM, HQ-SAM or SAM 2 folder of ``model_type`` (its config's, as ``recognise`` read it).

    A ``sam2_video`` or ``edgetam_video`` folder (the hub's SAM 2 / 2.1 and EdgeTAM layouts) holds the memory
    weights too, so it tracks; a ``sam2`` or ``edgetam`` folder segments images only.
    """
    model = load_complete_folder(FOLDER_CLASSES[model_type], path, "SAM")
    if isinstance(model, (EdgeTamModel, EdgeTamVideoModel)):
        if isinstance(model, EdgeTamVideoModel):
            return Sam2Segmenter(image_model_of(model, path, EDGETAM), EDGETAM, model)
        return Sam2Segmenter(model, EDGETAM)
    if isinstance(model, (Sam2Model, Sam2VideoModel)):
        backbone = model.config.vision_config.backbone_config
        name = f"SAM 2 {release_size(backbone.hidden_size, backbone.blocks_per_stage)}"
        if isinstance(model, Sam2VideoModel):
            return Sam2Segmenter(image_model_of(model, path, name), name, model)
        return Sam2Segmenter(model, name)
    size = {768: "B", 1024: "L", 1280: "H"}.get(model.config.vision_config.hidden_size, "?")
    return SamSegmenter(model, f"{'HQ-SAM' if model_type == 'sam_hq' else 'SAM'} ViT-{size}")

