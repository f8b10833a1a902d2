"""Meta's SAM 2 tensor names in transformers' names: SAM 2 / 2.1 files (the ``sam`` family) and the SAM 2
tracker inside SAM 3's files (the ``sam3`` family) both use them, so they live below both."""

from __future__ import annotations

import re

import torch

from ..model_files.checkpoints import first_rename

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
