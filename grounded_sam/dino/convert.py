"""The original IDEA Grounding DINO checkpoints in transformers' ``GroundingDinoForObjectDetection`` layout.

The architecture comes from tensor names and shapes (Swin-T vs Swin-B, layer counts, BERT
size), never from the ``.cfg.py`` the original code executes.
"""

from __future__ import annotations

import math
import re

import torch
from transformers import BertConfig, GroundingDinoConfig, SwinConfig

from ..errors import ModelFileError

_PROBE = "transformer.encoder.fusion_layers.0.attn.v_proj.weight"
_SWIN = "model.backbone.conv_encoder.model."
# Original keys no inference forward reads: BERT's pooler (frozen, unused), Swin's index
# buffers (recomputed from the window size) and the training-only denoising label table.
_UNUSED = re.compile(r"^(bert\.pooler\.|label_enc\.)|\.relative_position_index$")

_PLAIN: tuple[tuple[str, str], ...] = (
    ("bert.", "model.text_backbone."),
    ("feat_map.", "model.text_projection."),
    ("input_proj.", "model.input_proj_vision."),
    ("transformer.level_embed", "model.level_embed"),
    ("transformer.tgt_embed.", "model.query_position_embeddings."),
    ("transformer.enc_output_norm.", "model.enc_output_norm."),
    ("transformer.enc_output.", "model.enc_output."),
    ("transformer.enc_out_bbox_embed.", "model.encoder_output_bbox_embed."),
    ("transformer.decoder.norm.", "model.decoder.layer_norm."),
    ("transformer.decoder.ref_point_head.", "model.decoder.reference_points_head."),
    ("transformer.decoder.bbox_embed.", "model.decoder.bbox_embed."),
    ("bbox_embed.", "bbox_embed."),
    ("backbone.0.patch_embed.proj.", _SWIN + "swin.embeddings.patch_embeddings.projection."),
    ("backbone.0.patch_embed.norm.", _SWIN + "swin.embeddings.norm."),
)
# Per-layer renames: (regex on the original key, replacement).
_LAYERED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^backbone\.0\.norm(\d)\.", "NORM"),
        (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_before."),
        (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_after."),
        (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj."),
        (
            r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
            _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table",
        ),
        (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.{q,k,v}_proj."),
        (r"^backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.", _SWIN + r"swin.encoder.layers.\1.blocks.\2.mlp."),
        (r"^backbone\.0\.layers\.(\d+)\.downsample\.", _SWIN + r"swin.encoder.layers.\1.downsample."),
        # encoder: deformable image layers
        (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"model.encoder.layers.\1.deformable_layer.self_attn."),
        (r"^transformer\.encoder\.layers\.(\d+)\.norm1\.", r"model.encoder.layers.\1.deformable_layer.self_attn_layer_norm."),
        (r"^transformer\.encoder\.layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.deformable_layer.fc1."),
        (r"^transformer\.encoder\.layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.deformable_layer.fc2."),
        (r"^transformer\.encoder\.layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.deformable_layer.final_layer_norm."),
        # encoder: text enhancer layers
        (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_", r"model.encoder.layers.\1.text_enhancer_layer.self_attn.{query,key,value}."),
        (r"^transformer\.encoder\.text_layers\.(\d+)\.self_attn\.out_proj\.", r"model.encoder.layers.\1.text_enhancer_layer.self_attn.out_proj."),
        (r"^transformer\.encoder\.text_layers\.(\d+)\.linear1\.", r"model.encoder.layers.\1.text_enhancer_layer.fc1."),
        (r"^transformer\.encoder\.text_layers\.(\d+)\.linear2\.", r"model.encoder.layers.\1.text_enhancer_layer.fc2."),
        (r"^transformer\.encoder\.text_layers\.(\d+)\.norm1\.", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_before."),
        (r"^transformer\.encoder\.text_layers\.(\d+)\.norm2\.", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_after."),
        # encoder: image-text fusion layers
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_v$", r"model.encoder.layers.\1.fusion_layer.vision_param"),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.gamma_l$", r"model.encoder.layers.\1.fusion_layer.text_param"),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_v\.", r"model.encoder.layers.\1.fusion_layer.layer_norm_vision."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_l\.", r"model.encoder.layers.\1.fusion_layer.layer_norm_text."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.vision_proj."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.text_proj."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.values_vision_proj."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.values_text_proj."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_v_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.out_vision_proj."),
        (r"^transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_l_proj\.", r"model.encoder.layers.\1.fusion_layer.attn.out_text_proj."),
        # decoder
        (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"model.decoder.layers.\1.encoder_attn."),
        (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
        (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_", r"model.decoder.layers.\1.encoder_attn_text.{query,key,value}."),
        (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.", r"model.decoder.layers.\1.encoder_attn_text.out_proj."),
        (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"model.decoder.layers.\1.encoder_attn_text_layer_norm."),
        (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_", r"model.decoder.layers.\1.self_attn.{query,key,value}."),
        (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"model.decoder.layers.\1.self_attn.out_proj."),
        (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"model.decoder.layers.\1.self_attn_layer_norm."),
        (r"^transformer\.decoder\.layers\.(\d+)\.linear1\.", r"model.decoder.layers.\1.fc1."),
        (r"^transformer\.decoder\.layers\.(\d+)\.linear2\.", r"model.decoder.layers.\1.fc2."),
        (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"model.decoder.layers.\1.final_layer_norm."),
    )
)
_SPLIT = re.compile(r"\{(\w+),(\w+),(\w+)\}")


def is_original_grounding_dino(state: dict[str, torch.Tensor]) -> bool:
    return _PROBE in state and "bert.embeddings.word_embeddings.weight" in state


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def config_from_original(state: dict[str, torch.Tensor], source: str) -> GroundingDinoConfig:
    """The transformers config that fits an original checkpoint's tensors."""
    if not is_original_grounding_dino(state):
        raise ModelFileError(f"{source} is not an original Grounding DINO checkpoint (no BERT + fusion-layer weights)")
    try:
        return _config_from_original(state)
    except KeyError as err:
        raise ModelFileError(f"{source} is incomplete: it has no tensor {err.args[0]!r} (a partial download?)") from err


def _config_from_original(state: dict[str, torch.Tensor]) -> GroundingDinoConfig:
    n_stages = _count(state, r"^backbone\.0\.layers\.(\d+)\.")
    depths = [_count(state, rf"^backbone\.0\.layers\.{i}\.blocks\.(\d+)\.") for i in range(n_stages)]
    tables = [state[f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(n_stages)]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2
    embed_dim, _, patch, _ = state["backbone.0.patch_embed.proj.weight"].shape
    out_norms = sorted(int(m.group(1)) for k in state if (m := re.match(r"^backbone\.0\.norm(\d)\.weight$", k)))
    swin = SwinConfig(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=[t.shape[1] for t in tables],
        window_size=window,
        patch_size=patch,
        image_size=224 if window == 7 else 384,
        mlp_ratio=state["backbone.0.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        out_features=[f"stage{i + 1}" for i in out_norms],
    )
    words = state["bert.embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    bert = BertConfig(
        vocab_size=words.shape[0],
        hidden_size=hidden,
        num_hidden_layers=_count(state, r"^bert\.encoder\.layer\.(\d+)\."),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
    )
    return GroundingDinoConfig(
        backbone_config=swin.to_dict(),
        text_config=bert.to_dict(),
        d_model=state["feat_map.weight"].shape[0],
        num_queries=state["transformer.tgt_embed.weight"].shape[0],
        num_feature_levels=state["transformer.level_embed"].shape[0],
        encoder_layers=_count(state, r"^transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(state, r"^transformer\.decoder\.layers\.(\d+)\."),
        encoder_ffn_dim=state["transformer.encoder.layers.0.linear1.weight"].shape[0],
        decoder_ffn_dim=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
    )


def rename_original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original tensors under transformers' names; fused q/k/v projections are split in three."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _UNUSED.search(key):
            continue
        new = _rename(key)
        if new is None:
            out["unmapped:" + key] = value  # surfaces as an "unexpected" key naming the original
            continue
        split = _SPLIT.search(new)
        if split:
            for name, part in zip(split.groups(), value.chunk(3, dim=0), strict=True):
                out[_SPLIT.sub(name, new)] = part
        else:
            out[new] = value
    return out


def _rename(key: str) -> str | None:
    for pattern, repl in _LAYERED:
        m = pattern.match(key)
        if m:
            if repl == "NORM":  # backbone.0.normK -> hidden_states_norms.stage{K+1}
                return _SWIN + f"hidden_states_norms.stage{int(m.group(1)) + 1}." + key[m.end() :]
            return pattern.sub(repl, key, count=1)
    for old, new in _PLAIN:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def fill_unused_model_tensors(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> None:
    """Give transformers' final Swin LayerNorm, which the detector never calls, identity values.

    transformers lists it in ``_keys_to_ignore_on_load_missing``; filling it keeps loading strict.
    """
    for key, tensor in model_state.items():
        if key.startswith(_SWIN + "swin.layernorm.") and key not in state:
            state[key] = torch.ones_like(tensor) if key.endswith("weight") else torch.zeros_like(tensor)
