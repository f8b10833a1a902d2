"""Meta's SAM 3 release file (``sam3.pt``) into transformers' ``Sam3Model`` layout.

The release holds the detector (``detector.*``: ViT, CLIP-style text encoder, DETR encoder and
decoder, mask head) and the video tracker (``tracker.*``). The size is read from the tensors:
the ViT's width and blocks, which blocks attend globally (their rotary tables cover the whole
72x72 grid, the windowed ones 24x24), the text encoder's width, layers and context.
Head counts are in no tensor: they are Meta's (64 channels per ViT head, 16 text heads at
width 1024), as every released SAM 3 has them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import ModelFileError
from ..sam.sam2_names import rename_sam2_keys, rename_sam2_video_keys

DETECTOR = "detector."
TRACKER = "tracker."
TRUNK = "backbone.vision_backbone.trunk."
TEXT = "backbone.language_backbone.encoder."
# CLIP's pooled-output projection: SAM 3 never reads it, and repackaged files (ComfyUI's loader
# refuses its [1024, 512] shape) leave it out; then it is filled with zeros of Meta's shape.
CLIP_PROJECTION = f"{TEXT}text_projection"
CLIP_PROJECTION_DIM = 512
VIT_HEAD_DIM = 64
TEXT_HEAD_DIM = 64
# Tensors the image detector never reads: the tracker's neck and the point prompts' projections
# (transformers' Sam3Model takes boxes only).
_UNUSED = re.compile(r"^backbone\.vision_backbone\.sam2_convs\.|^geometry_encoder\.points_|\.freqs_cis$")
# The box-to-mask head: the tracker's SAM 2-style prompt encoder and mask decoder, fed by the
# detector's second neck (``sam2_convs``); the tracker's memory attention is for video only.
_TRACKER_PROBE = f"{TRACKER}sam_mask_decoder.iou_token.weight"
_SECOND_NECK = f"{DETECTOR}backbone.vision_backbone.sam2_convs."
_VIDEO_MEMORY = re.compile(r"^transformer\.")
# The tracker's video memory under SAM 2's names: its memory attention is ``transformer.encoder``, its
# memory encoder ``maskmem_backbone`` (SAM 2's ``memory_attention`` and ``memory_encoder``); the rest match.
_VIDEO_PROBE = f"{TRACKER}transformer.encoder.norm.weight"
_TO_SAM2_VIDEO_NAMES = (("transformer.encoder.", "memory_attention."), ("maskmem_backbone.", "memory_encoder."))
# Only SAM 3.1 has this neck (ComfyUI tells the two apart by it too)
_SAM31_NECK = "backbone.vision_backbone.propagation_convs."
# SAM 3's two-way transformer keeps SAM 1's MLP block names (lin1, lin2), SAM 2 has layers.0/1
_DECODER_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)(lin1|lin2)\.")
_DECODER_MLP_NAMES = {"lin1": "proj_in", "lin2": "proj_out"}

# Meta's names to transformers' (applied in order on names without the ``detector.`` prefix).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.vision_backbone\.trunk\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (r"^backbone\.vision_backbone\.trunk\.patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"^backbone\.vision_backbone\.trunk\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.(?:dconv_2x2_0|dconv_2x2|maxpool_2x2)\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    (r"^backbone\.language_backbone\.encoder\.token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (r"^backbone\.language_backbone\.encoder\.positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"^backbone\.language_backbone\.encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"^backbone\.language_backbone\.encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.attn\.", r"text_encoder.text_model.encoder.layers.\1.self_attn."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.ln_(\d)\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    # the geometry (box prompt) encoder and the DETR encoder share one layer layout
    (r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"^transformer\.encoder\.layers\.", "detr_encoder.layers."),
    (r"^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.cross_attn_image\.", r"\1.layers.\2.cross_attn."),
    (r"^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.linear(\d)\.", r"\1.layers.\2.mlp.fc\3."),
    (r"^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.norm(\d)\.", r"\1.layers.\2.layer_norm\3."),
    (r"^transformer\.decoder\.presence_token_head\.layers\.(\d)\.", lambda m: f"detr_decoder.presence_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"^transformer\.decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.(\d)\.", lambda m: f"detr_decoder.box_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.ref_point_head\.layers\.(\d)\.", lambda m: f"detr_decoder.ref_point_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.boxRPB_embed_(x|y)\.layers\.(\d)\.", lambda m: f"detr_decoder.box_rpb_embed_{m[1]}.layer{int(m[2]) + 1}."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"^transformer\.decoder\.", "detr_decoder."),
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", lambda m: f"dot_product_scoring.text_mlp.layer{int(m[1]) + 1}."),
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    (r"^segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"^segmentation_head\.(?:mask_predictor\.)?mask_embed\.", "mask_decoder.mask_embedder."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    # attention output projections: nn.MultiheadAttention's out_proj is transformers' o_proj (CLIP keeps out_proj)
    (r"^(?!text_encoder\.)(.*)\.out_proj\.", r"\1.o_proj."),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _RENAMES)


@dataclass(frozen=True)
class Sam3Architecture:
    """What a SAM 3 release file's tensors say about its size."""

    vit: dict  # Sam3ViTConfig fields
    text: dict  # CLIPTextConfig fields
    detr_encoder_layers: int
    detr_decoder_layers: int
    geometry_layers: int
    num_queries: int

    @property
    def name(self) -> str:
        return "SAM 3" if self.vit["num_hidden_layers"] == 32 and self.vit["hidden_size"] == 1024 else f"SAM 3 (ViT {self.vit['hidden_size']}x{self.vit['num_hidden_layers']})"


def detector_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image detector's tensors of a release file, without their ``detector.`` prefix."""
    return {k[len(DETECTOR):]: v for k, v in state.items() if k.startswith(DETECTOR)}


def is_meta_sam3(state: dict[str, torch.Tensor]) -> bool:
    return f"{DETECTOR}{TRUNK}pos_embed" in state or f"{DETECTOR}{TEXT}token_embedding.weight" in state


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def detect_sam3_architecture(state: dict[str, torch.Tensor], source: str) -> Sam3Architecture:
    """The size of the detector in ``state`` (a release file's tensors, ``detector.`` prefix removed)."""
    if any(k.startswith(_SAM31_NECK) for k in state):
        raise ModelFileError(
            f"{source} is a SAM 3.1 checkpoint (it has the multiplex tracker's propagation neck): transformers has no "
            "SAM 3.1 model yet, so it is not supported; use SAM 3's sam3.pt"
        )
    needed = (f"{TRUNK}pos_embed", f"{TRUNK}patch_embed.proj.weight", f"{TEXT}token_embedding.weight", f"{TEXT}positional_embedding")
    for name in needed:
        if name not in state:
            raise ModelFileError(f"{source} has no SAM 3 tensor 'detector.{name}': it is not a complete SAM 3 release file")
    pos, patch = state[f"{TRUNK}pos_embed"], state[f"{TRUNK}patch_embed.proj.weight"]
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    depth = _count(state, re.escape(TRUNK) + r"blocks\.(\d+)\.")
    pretrain_tokens = int(pos.shape[1]) - 1  # the first position is the (dropped) class token
    rope = [state.get(f"{TRUNK}blocks.{i}.attn.freqs_cis") for i in range(depth)]
    if any(r is None for r in rope):
        raise ModelFileError(f"{source} lacks the ViT's rotary tables (attn.freqs_cis): which blocks attend globally is unknown")
    grid = max(int(r.shape[0]) for r in rope)
    window = min(int(r.shape[0]) for r in rope)
    vit = {
        "hidden_size": hidden,
        "intermediate_size": int(state[f"{TRUNK}blocks.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": depth,
        "num_attention_heads": hidden // VIT_HEAD_DIM,
        "patch_size": patch_size,
        "image_size": math.isqrt(grid) * patch_size,
        "window_size": math.isqrt(window),
        "global_attn_indexes": [i for i, r in enumerate(rope) if int(r.shape[0]) == grid and grid != window],
        "pretrain_image_size": math.isqrt(pretrain_tokens) * patch_size,
        "layer_norm_eps": 1e-5,  # Meta's ViT uses torch's default (transformers' own default is 1e-6)
    }
    tokens = state[f"{TEXT}token_embedding.weight"]
    width = int(tokens.shape[1])
    text = {
        "vocab_size": int(tokens.shape[0]),
        "hidden_size": width,
        "intermediate_size": int(state[f"{TEXT}transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "projection_dim": int(state[CLIP_PROJECTION].shape[1]) if CLIP_PROJECTION in state else CLIP_PROJECTION_DIM,
        "num_hidden_layers": _count(state, re.escape(TEXT) + r"transformer\.resblocks\.(\d+)\."),
        "num_attention_heads": width // TEXT_HEAD_DIM,
        "max_position_embeddings": int(state[f"{TEXT}positional_embedding"].shape[0]),
        "hidden_act": "gelu",
    }
    return Sam3Architecture(
        vit=vit,
        text=text,
        detr_encoder_layers=_count(state, r"transformer\.encoder\.layers\.(\d+)\."),
        detr_decoder_layers=_count(state, r"transformer\.decoder\.layers\.(\d+)\."),
        geometry_layers=_count(state, r"geometry_encoder\.encode\.(\d+)\."),
        num_queries=int(state["transformer.decoder.query_embed.weight"].shape[0]),
    )


def _rename(name: str) -> str:
    for pattern, replacement in _COMPILED:
        name = pattern.sub(replacement, name)
    return name


_FUSED = {"qkv.weight": "weight", "qkv.bias": "bias", "in_proj_weight": "weight", "in_proj_bias": "bias"}


def rename_sam3_detector_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The detector's tensors under transformers' ``Sam3Model`` names; fused q/k/v projections split in three."""
    renamed: dict[str, torch.Tensor] = {}
    if CLIP_PROJECTION not in state and f"{TEXT}token_embedding.weight" in state:
        width = int(state[f"{TEXT}token_embedding.weight"].shape[1])
        renamed["text_encoder.text_projection.weight"] = torch.zeros(CLIP_PROJECTION_DIM, width)
    for old, tensor in state.items():
        if _UNUSED.search(old):
            continue
        name = _rename(old)
        if name == "vision_encoder.backbone.embeddings.position_embeddings":
            tensor = tensor[:, 1:]  # transformers keeps no class-token position
        elif name == "text_encoder.text_projection.weight":
            tensor = tensor.t()  # CLIP's projection is stored as x @ W
        fused = next((f for f in _FUSED if name.endswith(f)), None)
        if fused is None:
            renamed[name] = tensor
            continue
        base, kind = name[: -len(fused)], _FUSED[fused]
        for part, chunk in zip("qkv", tensor.chunk(3, dim=0), strict=True):
            renamed[f"{base}{part}_proj.{kind}"] = chunk
    return renamed


def has_box_head(state: dict[str, torch.Tensor]) -> bool:
    """Whether a release file holds the tracker (Meta's ``sam3.pt`` does): SAM 3 can then segment any boxes."""
    return _TRACKER_PROBE in state


def rename_sam3_box_head_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A release file's box-to-mask head under transformers' ``Sam3TrackerModel`` names, without the ViT
    (the detector's serves both): prompt encoder, mask decoder and the second neck."""
    tracker = {k[len(TRACKER):]: v for k, v in state.items() if k.startswith(TRACKER)}
    head = {
        _DECODER_MLP.sub(lambda m: f"{m[1]}{_DECODER_MLP_NAMES[m[2]]}.", k): v
        for k, v in rename_sam2_keys({k: v for k, v in tracker.items() if not _VIDEO_MEMORY.match(k)}).items()
    }
    for name, tensor in state.items():
        if name.startswith(_SECOND_NECK):
            head[_rename("backbone.vision_backbone.convs." + name[len(_SECOND_NECK):])] = tensor
    return head


def has_video_tracker(state: dict[str, torch.Tensor]) -> bool:
    """Whether a release file holds the tracker's video memory (Meta's ``sam3.pt`` does): SAM 3 can then track."""
    return _VIDEO_PROBE in state


def rename_sam3_video_memory_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A release file's video memory (memory attention and encoder, object pointers, temporal and occlusion
    embeddings) under transformers' ``Sam3TrackerVideoModel`` names; the rest of that model is the box-to-mask head."""
    tracker = {}
    for name, tensor in state.items():
        if not name.startswith(TRACKER):
            continue
        name = name[len(TRACKER):]
        for meta, sam2 in _TO_SAM2_VIDEO_NAMES:
            if name.startswith(meta):
                name = sam2 + name[len(meta):]
        tracker[name] = tensor
    return rename_sam2_video_keys(tracker)
