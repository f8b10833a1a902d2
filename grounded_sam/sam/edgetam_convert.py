"""Meta's EdgeTAM release file (``edgetam.pt``) for transformers' ``EdgeTamModel`` and ``EdgeTamVideoModel``.

EdgeTAM is SAM 2 with a RepViT image encoder (timm's ``repvit_m1``), a memory whose frames are
squeezed to 512 tokens by a spatial perceiver, and two memory-attention layers. Its heads, prompt
encoder, neck and memory encoder carry SAM 2's tensor names, so those are renamed as SAM 2's
are (``sam2_names``); the encoder's timm tensors keep their names under transformers' wrapper,
and the perceiver's fused key/value projections are split in two.
"""

from __future__ import annotations

import re

import torch
from transformers import EdgeTamConfig, EdgeTamVideoConfig, TimmWrapperConfig
from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

from ..errors import ModelFileError
from ..model_files.checkpoints import first_rename
from .sam2_names import rename_sam2_keys, rename_sam2_video_keys

NAME = "EdgeTAM"
_TRUNK = "image_encoder.trunk.body."
_PERCEIVER = "spatial_perceiver."
# timm's RepViT-M1 as EdgeTAM's trunk: four stages' features (strides 4, 8, 16, 32), no classifier head
BACKBONE = {"architecture": "repvit_m1", "model_args": {"in_chans": 3, "features_only": True, "out_indices": (0, 1, 2, 3)}}

_PERCEIVER_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
        (r"^spatial_perceiver\.norm\.", "spatial_perceiver.layer_norm."),
        (r"^spatial_perceiver\.layers\.(\d+)\.attn\.norm_x\.", r"spatial_perceiver.layers.\1.layer_norm_input."),
        (r"^spatial_perceiver\.layers\.(\d+)\.attn\.norm_latents\.", r"spatial_perceiver.layers.\1.layer_norm_latents."),
        (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.norm\.", r"spatial_perceiver.layers.\1.layer_norm_self."),
        (r"^spatial_perceiver\.layers\.(\d+)\.attn\.to_q\.", r"spatial_perceiver.layers.\1.cross_attention.q_proj."),
        (r"^spatial_perceiver\.layers\.(\d+)\.attn\.to_kv\.", r"spatial_perceiver.layers.\1.cross_attention.kv."),
        (r"^spatial_perceiver\.layers\.(\d+)\.attn\.to_out\.", r"spatial_perceiver.layers.\1.cross_attention.o_proj."),
        (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.to_q\.", r"spatial_perceiver.layers.\1.self_attention.q_proj."),
        (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.to_kv\.", r"spatial_perceiver.layers.\1.self_attention.kv."),
        (r"^spatial_perceiver\.layers\.(\d+)\.self_attn\.to_out\.", r"spatial_perceiver.layers.\1.self_attention.o_proj."),
        # Meta's feed-forwards are Sequential(norm, linear, GELU, linear)
        (r"^spatial_perceiver\.layers\.(\d+)\.(ff|self_ff)\.0\.", r"spatial_perceiver.layers.\1.\2.layer_norm."),
        (r"^spatial_perceiver\.layers\.(\d+)\.(ff|self_ff)\.1\.", r"spatial_perceiver.layers.\1.\2.up_proj."),
        (r"^spatial_perceiver\.layers\.(\d+)\.(ff|self_ff)\.3\.", r"spatial_perceiver.layers.\1.\2.down_proj."),
    )
)  # fmt: skip
_FEED_FORWARD = re.compile(r"^(spatial_perceiver\.layers\.\d+\.)(ff|self_ff)\.")
_MEMORY_MLP = re.compile(r"^(memory_attention\.layers\.\d+\.)linear([12])\.")


def is_meta_edgetam(state: dict[str, torch.Tensor]) -> bool:
    """EdgeTAM's tensors: SAM 2's heads beside a timm trunk and a spatial perceiver."""
    return any(k.startswith(_PERCEIVER) for k in state) or any(k.startswith(_TRUNK) for k in state)


def rename_edgetam_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of ``edgetam.pt`` under ``EdgeTamVideoModel``'s names (the image model's are a subset)."""
    common = {k: v for k, v in state.items() if not k.startswith((_TRUNK, _PERCEIVER))}
    out = {**rename_sam2_keys(common), **rename_sam2_video_keys(common)}
    out = {_MEMORY_MLP.sub(lambda m: f"{m.group(1)}mlp.{'up' if m.group(2) == '1' else 'down'}_proj.", k): v for k, v in out.items()}
    for key, value in state.items():
        if key.startswith(_TRUNK):
            out["vision_encoder.backbone.timm_model." + key[len(_TRUNK) :]] = value
        elif key.startswith(_PERCEIVER):
            new = first_rename(key, _PERCEIVER_RENAMES)
            new = _FEED_FORWARD.sub(lambda m: f"{m.group(1)}{'mlp' if m.group(2) == 'ff' else 'self_mlp'}.", new)
            if ".kv." in new:  # one [2C, C] projection in Meta's, keys then values: two in transformers'
                keys, values = value.chunk(2, dim=0)
                out[new.replace(".kv.", ".k_proj.")], out[new.replace(".kv.", ".v_proj.")] = keys, values
            else:
                out[new] = value
    return out


def edgetam_video_config(state: dict[str, torch.Tensor], source: str) -> EdgeTamVideoConfig:
    """The release's configuration (``edgetam.yaml``), checked against the file's widths."""
    if _TRUNK + "stem.conv1.c.weight" not in state or _PERCEIVER + "latents" not in state:
        raise ModelFileError(f"{source} is incomplete: it has no EdgeTAM image encoder or memory perceiver (a partial download?)")
    stem = state[_TRUNK + "stem.conv1.c.weight"].shape[0]
    latents = state[_PERCEIVER + "latents"].shape
    if stem != 24 or tuple(latents) != (256, 64):
        raise ModelFileError(
            f"{source} is an EdgeTAM model of an unknown size (RepViT stem {stem} wide, {latents[0]} memory latents of {latents[-1]}): "
            "only Meta's edgetam.pt release is supported"
        )
    vision = EdgeTamVisionConfig(backbone_config=TimmWrapperConfig(**BACKBONE)).to_dict()
    return EdgeTamVideoConfig(
        vision_config=vision,
        # EdgeTAM has neither SAM 2.1's occlusion embedding nor a temporal encoding of object pointers
        enable_occlusion_spatial_embedding="no_obj_embed_spatial" in state,
        enable_temporal_pos_encoding_for_object_pointers="obj_ptr_tpos_proj.weight" in state,
    )


def edgetam_image_config(video: EdgeTamVideoConfig) -> EdgeTamConfig:
    return EdgeTamConfig(
        vision_config=video.vision_config.to_dict(),
        prompt_encoder_config=video.prompt_encoder_config.to_dict(),
        mask_decoder_config=video.mask_decoder_config.to_dict(),
    )
