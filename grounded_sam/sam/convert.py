"""Meta's SAM / HQ-SAM / MobileSAM checkpoints, renamed into transformers' ``SamModel`` layout.

The architecture is read from tensor names and shapes, never from a config file, so a
checkpoint alone tells us whether it is ViT-B/L/H, HQ or MobileSAM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import ModelFileError
from ..model_files.checkpoints import first_rename
from .tiny_vit import TinyViTConfig

_VIT_PROBE = "image_encoder.blocks.0.attn.qkv.weight"
_TINY_VIT_PROBE = "image_encoder.patch_embed.seq.0.c.weight"
_HQ_PROBE = "mask_decoder.hf_token.weight"
_DECODER_PROBE = "mask_decoder.iou_token.weight"

# Released checkpoints carry these, but no forward pass reads them.
_UNUSED = (re.compile(r"^image_encoder\.(head|norm_head)\."),)

# (pattern, replacement) in order; the first match wins for a key.
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
        (r"^image_encoder\.blocks\.", "vision_encoder.layers."),
        (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
        (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
        (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
        (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
        (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
        (r"^image_encoder\.", "vision_encoder."),
        (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
        (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
        (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
        (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
        (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
        (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
        (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
        (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
        (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
        (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
        (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
        (r"^mask_decoder\.hf_token\.", "mask_decoder.hq_token."),
        (r"^mask_decoder\.hf_mlp\.", "mask_decoder.hq_mask_mlp."),
        (r"^mask_decoder\.compress_vit_feat\.0\.", "mask_decoder.compress_vit_conv1."),
        (r"^mask_decoder\.compress_vit_feat\.1\.", "mask_decoder.compress_vit_norm."),
        (r"^mask_decoder\.compress_vit_feat\.3\.", "mask_decoder.compress_vit_conv2."),
        (r"^mask_decoder\.embedding_encoder\.0\.", "mask_decoder.encoder_conv1."),
        (r"^mask_decoder\.embedding_encoder\.1\.", "mask_decoder.encoder_norm."),
        (r"^mask_decoder\.embedding_encoder\.3\.", "mask_decoder.encoder_conv2."),
        (r"^mask_decoder\.embedding_maskfeature\.0\.", "mask_decoder.mask_conv1."),
        (r"^mask_decoder\.embedding_maskfeature\.1\.", "mask_decoder.mask_norm."),
        (r"^mask_decoder\.embedding_maskfeature\.3\.", "mask_decoder.mask_conv2."),
    )
)
# Meta's MLP(layers.0 .. layers.L-1) is transformers' proj_in, layers.0 .. L-3, proj_out.
_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head|hq_mask_mlp))\.layers\.(\d+)\.(.*)$")
_GAUSSIAN = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


@dataclass(frozen=True)
class SamArchitecture:
    encoder: str  # "vit" or "tiny_vit"
    hq: bool
    vision: dict  # SamVisionConfig kwargs (ViT) or the TinyViT config
    tiny_vit: TinyViTConfig | None = None

    @property
    def name(self) -> str:
        if self.encoder == "tiny_vit":
            return "MobileSAM (TinyViT)"
        size = {768: "B", 1024: "L", 1280: "H"}.get(self.vision["hidden_size"], str(self.vision["hidden_size"]))
        return f"{'HQ-SAM' if self.hq else 'SAM'} ViT-{size}"


def is_meta_sam(state: dict[str, torch.Tensor]) -> bool:
    return _DECODER_PROBE in state and (_VIT_PROBE in state or _TINY_VIT_PROBE in state)


def detect_architecture(state: dict[str, torch.Tensor], source: str) -> SamArchitecture:
    if not is_meta_sam(state):
        raise ModelFileError(
            f"{source} is not a Segment Anything checkpoint (no SAM image encoder / mask decoder weights found)"
        )
    hq = _HQ_PROBE in state
    try:
        if _TINY_VIT_PROBE in state:
            return SamArchitecture("tiny_vit", hq, {}, TinyViTConfig.from_state_dict(state, "image_encoder."))
        return SamArchitecture("vit", hq, _vit_config(state))
    except KeyError as err:
        raise ModelFileError(f"{source} is incomplete: it has no tensor {err.args[0]!r} (a partial download?)") from err


def _vit_config(state: dict[str, torch.Tensor]) -> dict:
    patch = state["image_encoder.patch_embed.proj.weight"]
    hidden, _, patch_size, _ = patch.shape
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"^image_encoder\.blocks\.(\d+)\.", k)))
    grid = state["image_encoder.pos_embed"].shape[1]
    rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    head_dim = rel[0].shape[1]
    global_blocks = [i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1]
    windowed = [r.shape[0] for r in rel if r.shape[0] != 2 * grid - 1]
    return {
        "hidden_size": hidden,
        "num_hidden_layers": depth,
        "num_attention_heads": hidden // head_dim,
        "patch_size": patch_size,
        "image_size": grid * patch_size,
        "global_attn_indexes": global_blocks,
        "window_size": (windowed[0] + 1) // 2 if windowed else 0,
        "mlp_dim": state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
        "output_channels": state["image_encoder.neck.0.weight"].shape[0],
    }


def rename_meta_keys(state: dict[str, torch.Tensor], arch: SamArchitecture) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under transformers' names (TinyViT keeps its own names)."""
    mlp_depth: dict[str, int] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(p.match(key) for p in _UNUSED):
            continue
        if key == _GAUSSIAN:
            out["shared_image_embedding.positional_embedding"] = value
            out["prompt_encoder.shared_embedding.positional_embedding"] = value
            continue
        if arch.encoder == "tiny_vit" and key.startswith("image_encoder."):
            new = "vision_encoder." + key.removeprefix("image_encoder.")
        else:
            new = first_rename(key, _RENAMES)
        out[new] = value
        if m := _MLP.match(new):
            mlp_depth[m.group(1)] = max(mlp_depth.get(m.group(1), 0), int(m.group(2)) + 1)
    return {_rename_mlp(k, mlp_depth): v for k, v in out.items()}


def _rename_mlp(key: str, mlp_depth: dict[str, int]) -> str:
    m = _MLP.match(key)
    if m is None:
        return key
    head, index, rest = m.group(1), int(m.group(2)), m.group(3)
    name = "proj_in" if index == 0 else "proj_out" if index == mlp_depth[head] - 1 else f"layers.{index - 1}"
    return f"{head}.{name}.{rest}"
