"""Meta's SAM 2 / SAM 2.1 checkpoints (``sam2*_hiera_*.pt``), renamed into transformers' ``Sam2Model``.

The size is read from the tensors (Hiera's width, its blocks per stage); the few settings no
tensor carries (heads, attention windows, global blocks) are those of Meta's release for that
size, so no config file is ever read. Only the image path is kept: the video memory weights go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

import torch

from ..errors import ModelFileError
from .convert import first_rename

_TRUNK = "image_encoder.trunk."
_PATCH_PROBE = _TRUNK + "patch_embed.proj.weight"
_DECODER_PROBE = "sam_mask_decoder.iou_token.weight"
_SAM21_PROBE = "no_obj_embed_spatial"  # SAM 2.1 added it; SAM 2 has none

# Meta's four releases by (Hiera width, blocks per stage): heads in stage 1, global-attention
# blocks and window sizes per stage (sam2/configs/sam2.1/*.yaml and Hiera's defaults).
_RELEASES: dict[tuple[int, tuple[int, ...]], tuple[str, int, list[int], list[int]]] = {
    (96, (1, 2, 7, 2)): ("Hiera-T", 1, [5, 7, 9], [8, 4, 14, 7]),
    (96, (1, 2, 11, 2)): ("Hiera-S", 1, [7, 10, 13], [8, 4, 14, 7]),
    (112, (2, 3, 16, 3)): ("Hiera-B+", 2, [12, 16, 20], [8, 4, 14, 7]),
    (144, (2, 6, 36, 4)): ("Hiera-L", 2, [23, 33, 43], [8, 4, 16, 8]),
}

# Video-only parts (memory encoder and attention, object pointers, occlusion embeddings).
_VIDEO_ONLY = re.compile(r"^(memory_|maskmem_|obj_ptr|mask_downsample|no_obj_|no_mem_pos_enc)")

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^image_encoder\.trunk\.patch_embed\.proj\.", "vision_encoder.backbone.patch_embed.projection."),
        (r"^image_encoder\.trunk\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.blocks.\1.layer_norm\2."),
        (r"^image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.0\.", r"vision_encoder.backbone.blocks.\1.mlp.proj_in."),
        (r"^image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.1\.", r"vision_encoder.backbone.blocks.\1.mlp.proj_out."),
        (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
        (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
        (r"^no_mem_embed$", "no_memory_embedding"),
        (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
        (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
        (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
        (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
        (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
        (r"^sam_prompt_encoder\.", "prompt_encoder."),
        (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
        (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.0\.", r"mask_decoder.transformer.layers.\1.mlp.proj_in."),
        (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.1\.", r"mask_decoder.transformer.layers.\1.mlp.proj_out."),
        (r"^sam_mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
        (r"^sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
        (r"^sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
        (r"^sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
        # Meta's three-layer MLP heads: layers.0, 1, 2 are transformers' proj_in, layers.0, proj_out.
        (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.0\.",
         r"mask_decoder.\1.proj_in."),
        (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.1\.",
         r"mask_decoder.\1.layers.0."),
        (r"^sam_mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.2\.",
         r"mask_decoder.\1.proj_out."),
        (r"^sam_mask_decoder\.", "mask_decoder."),
    )
)  # fmt: skip
_ATTENTION_OUT = re.compile(r"^(mask_decoder\.transformer\..*)\.out_proj\.")  # attention output: o_proj there
_POINT = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_GAUSSIAN = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


@dataclass(frozen=True)
class Sam2Architecture:
    version: str  # "2" or "2.1"
    size: str  # "Hiera-T", "Hiera-S", "Hiera-B+", "Hiera-L"
    backbone: dict  # Sam2HieraDetConfig kwargs

    @property
    def name(self) -> str:
        return f"SAM {self.version} {self.size}"


def is_meta_sam2(state: dict[str, torch.Tensor]) -> bool:
    return _PATCH_PROBE in state or _DECODER_PROBE in state


def detect_sam2_architecture(state: dict[str, torch.Tensor], source: str) -> Sam2Architecture:
    try:
        width = state[_PATCH_PROBE].shape[0]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"^image_encoder\.trunk\.blocks\.(\d+)\.", k)))
        # The first block of every later stage projects to the doubled width.
        starts = [0, *sorted(i for i in range(depth) if f"{_TRUNK}blocks.{i}.proj.weight" in state), depth]
        stages = tuple(b - a for a, b in pairwise(starts))
        background = list(state[_TRUNK + "pos_embed"].shape[-2:])
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{source} is incomplete: it has no SAM 2 {_missing(err)} (a partial download?)") from err
    release = _RELEASES.get((width, stages))
    if release is None:
        raise ModelFileError(
            f"{source} is a SAM 2 model of an unknown size (Hiera width {width}, blocks per stage {list(stages)}): "
            "only Meta's tiny, small, base_plus and large releases are supported"
        )
    size, heads, global_blocks, windows = release
    backbone = {
        "hidden_size": width,
        "num_attention_heads": heads,
        "blocks_per_stage": list(stages),
        "embed_dim_per_stage": [width << i for i in range(4)],
        "num_attention_heads_per_stage": [heads << i for i in range(4)],
        "window_size_per_stage": windows,
        "global_attention_blocks": global_blocks,
        "window_positional_embedding_background_size": background,
    }
    return Sam2Architecture("2.1" if _SAM21_PROBE in state else "2", size, backbone)


def release_size(width: int, stages: list[int] | tuple[int, ...]) -> str:
    """"Hiera-T" .. "Hiera-L" for Meta's releases, else "Hiera"."""
    release = _RELEASES.get((width, tuple(stages)))
    return release[0] if release else "Hiera"


def _missing(err: Exception) -> str:
    return f"tensor {err.args[0]!r}" if isinstance(err, KeyError) else "image encoder blocks"


def rename_sam2_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-path tensors under transformers' names."""
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        if _VIDEO_ONLY.match(key):
            continue
        if m := _POINT.match(key):
            points[int(m.group(1))] = value
            continue
        if key == _GAUSSIAN:
            out["shared_image_embedding.positional_embedding"] = value
            out["prompt_encoder.shared_embedding.positional_embedding"] = value
            continue
        out[_ATTENTION_OUT.sub(r"\1.o_proj.", first_rename(key, _RENAMES))] = value
    if points:  # four [1, C] point-type embeddings are one [4, C] table in transformers
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    return out


# The video-only tensors (memory encoder and attention, object pointers) under transformers' names.
_VIDEO_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
        (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
        (r"^no_obj_ptr$", "no_object_pointer"),
        (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
        (r"^memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj\.", r"memory_attention.layers.\1.\2.o_proj."),
        (r"^memory_attention\.layers\.(\d+)\.norm(\d)\.", r"memory_attention.layers.\1.layer_norm\2."),
        (r"^memory_attention\.norm\.", "memory_attention.layer_norm."),
        (r"^memory_encoder\.mask_downsampler\.encoder\.12\.", "memory_encoder.mask_downsampler.final_conv."),
        (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
        (r"^memory_encoder\.fuser\.layers\.(\d+)\.gamma$", r"memory_encoder.memory_fuser.layers.\1.scale"),
        (r"^memory_encoder\.fuser\.layers\.(\d+)\.dwconv\.", r"memory_encoder.memory_fuser.layers.\1.depthwise_conv."),
        (r"^memory_encoder\.fuser\.layers\.(\d+)\.norm\.", r"memory_encoder.memory_fuser.layers.\1.layer_norm."),
        (r"^memory_encoder\.fuser\.layers\.(\d+)\.pwconv(\d)\.", r"memory_encoder.memory_fuser.layers.\1.pointwise_conv\2."),
        (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
        (r"^obj_ptr_proj\.layers\.0\.", "object_pointer_proj.proj_in."),
        (r"^obj_ptr_proj\.layers\.1\.", "object_pointer_proj.layers.0."),
        (r"^obj_ptr_proj\.layers\.2\.", "object_pointer_proj.proj_out."),
        (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    )
)  # fmt: skip
# Meta's mask downsampler: a conv then a norm per stage, at Sequential indices 0/1, 3/4, 6/7, 9/10.
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.")


def rename_sam2_video_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The video-only tensors (what ``rename_sam2_keys`` leaves out) under ``Sam2VideoModel``'s names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not _VIDEO_ONLY.match(key):
            continue
        if (m := _DOWNSAMPLER.match(key)) and int(m.group(1)) != 12:
            index = int(m.group(1))
            part = "conv" if index % 3 == 0 else "layer_norm"
            key = f"memory_encoder.mask_downsampler.layers.{index // 3}.{part}." + key[m.end():]
        out[first_rename(key, _VIDEO_RENAMES)] = value
    return out
