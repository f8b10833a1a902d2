"""Our faster attention cores against transformers' own implementations of the same math."""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import torch
from transformers import SamVisionConfig
from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionSdpaAttention

from grounded_sam.dino import deformable, feed_forward
from grounded_sam.sam import vit_attention

# Uneven levels, one of them 1x1, so border handling and level offsets are both exercised.
LEVELS = [(9, 13), (5, 7), (3, 4), (1, 1)]


def deformable_inputs(dtype: torch.dtype, batch: int = 2, heads: int = 4, dim: int = 8, queries: int = 37, points: int = 3):
    generator = torch.Generator().manual_seed(0)
    tokens = sum(h * w for h, w in LEVELS)
    value = torch.randn(batch, tokens, heads, dim, generator=generator, dtype=dtype)
    # Some locations fall outside the map on each side: those corners must count as zeros.
    locations = torch.rand(batch, queries, heads, len(LEVELS), points, 2, generator=generator, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(LEVELS), points, generator=generator, dtype=dtype)
    return value, locations, weights


def stock_deformable(value, locations, weights):
    shapes = torch.tensor(LEVELS)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return MultiScaleDeformableAttention()(value, shapes, LEVELS, starts, locations, weights, 64)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gathered_deformable_attention_matches_grid_sample_version(dtype, tolerance):
    value, locations, weights = deformable_inputs(dtype)
    expected = stock_deformable(value, locations, weights)
    ours = deformable.gather_deformable(value, LEVELS, locations, weights)
    assert ours.shape == expected.shape
    assert ours.dtype == expected.dtype
    torch.testing.assert_close(ours, expected, atol=tolerance, rtol=tolerance)


def test_gathered_deformable_attention_reads_zeros_at_a_nan_location():
    value, locations, weights = deformable_inputs(torch.float64)
    locations[0, 3, 1, 2, 0] = float("nan")  # one point of one head: its corners must stay inside the table
    clean = locations.clone()
    clean[0, 3, 1, 2, 0] = -10.0  # far outside the map: grid_sample's zero padding
    ours = deformable.gather_deformable(value, LEVELS, locations, weights)
    torch.testing.assert_close(ours, stock_deformable(value, clean, weights), atol=1e-12, rtol=1e-12)


def test_gathered_deformable_attention_replaces_each_core_once():
    model = torch.nn.Sequential(MultiScaleDeformableAttention(), torch.nn.Sequential(MultiScaleDeformableAttention()))
    assert deformable.use_gathered_deformable_attention(model) == 2
    assert deformable.use_gathered_deformable_attention(model) == 0  # already switched: not wrapped twice
    value, locations, weights = deformable_inputs(torch.float64)
    shapes = torch.tensor(LEVELS)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    ours = model[0](value, shapes, LEVELS, starts, locations, weights, 64)
    torch.testing.assert_close(ours, stock_deformable(value, locations, weights), atol=1e-12, rtol=1e-12)


def perturbed(build: Callable[[], torch.nn.Module], scale: float) -> torch.nn.Module:
    """A module in float64 for inference, its zero-initialised biases and offsets given values so a wrong term shows."""
    torch.manual_seed(0)
    module = build().double().eval()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * scale)
    return module


def encoder_inputs(seed: int, coordinates: int = 2) -> dict:
    """Float64 image tokens of ``LEVELS`` (width 32) for two images, the second padded, with their reference points."""
    shapes = torch.tensor(LEVELS)
    tokens = int((shapes[:, 0] * shapes[:, 1]).sum())
    generator = torch.Generator().manual_seed(seed)
    hidden, position = (torch.randn(2, tokens, 32, generator=generator, dtype=torch.float64) for _ in range(2))
    valid = torch.ones(2, tokens, dtype=torch.bool)
    valid[1, -5:] = False  # a padded image: masked values must stay masked
    return {
        "hidden_states": hidden, "attention_mask": valid, "position_embeddings": position,
        "reference_points": torch.rand(2, tokens, len(LEVELS), coordinates, generator=generator, dtype=torch.float64),
        "spatial_shapes": shapes, "spatial_shapes_list": LEVELS,
        "level_start_index": torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]]),
    }  # fmt: skip


def grounding_dino_attention_inputs(coordinates: int):
    """One deformable attention module with non-zero weights and its inputs (self-attention over the image tokens)."""
    from transformers import GroundingDinoConfig
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoMultiscaleDeformableAttention

    config = GroundingDinoConfig(d_model=32, num_feature_levels=len(LEVELS))
    module = perturbed(lambda: GroundingDinoMultiscaleDeformableAttention(config, num_heads=4, n_points=3), 0.5)
    inputs = encoder_inputs(2, coordinates)
    return module, {**inputs, "encoder_hidden_states": inputs["hidden_states"]}


@pytest.mark.parametrize("coordinates", [2, 4])  # the encoder's point references (ours), the decoder's boxes (transformers')
def test_grounding_dino_deformable_attention_matches_transformers(monkeypatch, coordinates):
    module, inputs = grounding_dino_attention_inputs(coordinates)
    with torch.inference_mode():
        expected, expected_weights = module(**inputs)
        assert deformable.use_gathered_deformable_attention(module) == 2  # the module and its core
        if coordinates == 2:  # ours must run, not fall back to transformers'

            def stock_forward(*args, **kwargs):
                raise AssertionError("the encoder's references fell back to transformers' forward")

            monkeypatch.setattr(module, "_stock_forward", stock_forward)
        ours, weights = module(**inputs)
    assert expected.abs().mean() > 0.1  # not a trivial output
    torch.testing.assert_close(weights, expected_weights, atol=0, rtol=0)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-12)


def test_sampling_pixels_stay_in_the_reference_precision_under_bf16_autocast():
    generator = torch.Generator().manual_seed(3)
    heads, points, shapes = 4, 3, [(100, 150), (50, 75)]
    reference = torch.rand(1, 64, len(shapes), 2, generator=generator)
    offsets = (torch.randn(1, 64, heads * len(shapes) * points * 2, generator=generator) * 4).bfloat16()
    with torch.autocast("cpu", torch.bfloat16):
        pixels = deformable.sampling_pixels(offsets, reference, shapes, heads, points)
    assert pixels.dtype == torch.float32
    size = torch.tensor([(w, h) for h, w in shapes], dtype=torch.float64).view(1, 1, 1, len(shapes), 1, 2)
    location = reference.double()[:, :, None, :, None, :] + offsets.double().view(1, 64, heads, len(shapes), points, 2) / size
    expected = (location * size - 0.5).view(1, 64, -1)  # transformers' location, in the gather's pixels
    torch.testing.assert_close(pixels.double(), expected, atol=1e-4, rtol=0)  # bf16 would be off by up to 0.5 pixel at x = 150


@pytest.mark.parametrize("token_block", [4, 37, 1 << 20])  # 165 tokens: blocks of 4 and 37 leave a short last block; one block
def test_blocked_feed_forward_layer_matches_transformers(monkeypatch, token_block):
    from transformers import GroundingDinoConfig
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoDeformableLayer

    monkeypatch.setattr(feed_forward, "TOKEN_BLOCK", token_block)
    config = GroundingDinoConfig(d_model=32, encoder_ffn_dim=64, encoder_attention_heads=4, num_feature_levels=len(LEVELS))
    layer = perturbed(lambda: GroundingDinoDeformableLayer(config), 0.1)
    inputs = encoder_inputs(1)
    with torch.inference_mode():
        expected, expected_weights = layer(**inputs)
        assert feed_forward.use_blocked_feed_forward(layer) == 1
        assert feed_forward.use_blocked_feed_forward(layer) == 0  # already switched: not wrapped twice
        ours, weights = layer(**inputs)
    torch.testing.assert_close(weights, expected_weights, atol=0, rtol=0)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-12)


def sam_attention(cls, window: int) -> torch.nn.Module:
    config = SamVisionConfig(hidden_size=32, num_attention_heads=2, image_size=112, patch_size=16, use_rel_pos=True)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    module = cls(config, window).double().eval()
    with torch.no_grad():  # rel_pos starts at zero: give it values so a wrong bias shows
        module.rel_pos_h.normal_(0, 0.5)
        module.rel_pos_w.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("window", [0, 3])  # global 7x7 tokens, and 3x3 windows
@pytest.mark.parametrize("band_elements", [1, 3 * 2744, 1 << 30])  # one row per band, 3+3+1 rows (global), one band
def test_banded_sam_attention_matches_transformers(monkeypatch, window, band_elements):
    monkeypatch.setattr(vit_attention, "BIAS_BAND_ELEMENTS", band_elements)
    eager = sam_attention(SamVisionAttention, window)
    sdpa = sam_attention(SamVisionSdpaAttention, window)
    side = window or 7
    hidden = torch.randn(4, side, side, 32, dtype=torch.float64)
    with torch.inference_mode():
        expected_eager, expected_sdpa = eager(hidden)[0], sdpa(hidden)[0]
        sdpa.forward = types.MethodType(vit_attention.banded_attention_forward, sdpa)
        ours = sdpa(hidden)[0]
    torch.testing.assert_close(ours, expected_sdpa, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours, expected_eager, atol=1e-6, rtol=0)  # eager takes its softmax in float32


def test_banded_attention_is_used_by_every_rel_pos_block():
    from transformers import SamConfig, SamModel

    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=64, global_attn_indexes=[1])
    model = SamModel(SamConfig(vision_config=vision.to_dict()))
    assert vit_attention.use_banded_attention(model.vision_encoder) == 3
    assert all(layer.attn.forward.__func__ is vit_attention.banded_attention_forward for layer in model.vision_encoder.layers)
    assert vit_attention.use_banded_attention(model.vision_encoder) == 0  # already switched: not wrapped twice


def test_gathered_deformable_attention_sums_half_precision_in_float32():
    value, locations, weights = deformable_inputs(torch.float64)
    expected = stock_deformable(value, locations, weights)
    ours = deformable.gather_deformable(value.bfloat16(), LEVELS, locations.float(), weights.float())
    assert ours.dtype == torch.bfloat16
    # bf16 values carry ~3 significant digits; float32 accumulation keeps the sum at that level
    torch.testing.assert_close(ours.double(), expected, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("boxes", [1, 5])
def test_box_decoder_matches_transformers_sam(boxes):
    """Decoding many boxes with the image's first-layer work done once gives SamModel's single-mask logits."""
    from transformers import SamConfig, SamModel

    from grounded_sam.sam.box_decoder import decode_boxes

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], mlp_dim=64)
    model = SamModel(SamConfig(vision_config=vision.to_dict())).double().eval()
    with torch.no_grad():  # zero-initialised tensors (biases, layer norms) get values, so a wrong term shows
        for param in model.mask_decoder.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    generator = torch.Generator().manual_seed(1)
    embedding = torch.randn(1, 256, 64, 64, generator=generator, dtype=torch.float64)
    corners = torch.rand(boxes, 2, generator=generator, dtype=torch.float64) * 700
    xyxy = torch.cat([corners, corners + 40 + torch.rand(boxes, 2, generator=generator, dtype=torch.float64) * 300], dim=1)
    with torch.inference_mode():
        expected = model(image_embeddings=embedding, input_boxes=xyxy.unsqueeze(0), multimask_output=False).pred_masks[0, :, 0]
        ours = decode_boxes(model, embedding, xyxy)
    assert expected.shape == ours.shape == (boxes, 256, 256)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)
    assert (expected > 0).any() and (expected < 0).any()


def fusion_attention() -> torch.nn.Module:
    from transformers import GroundingDinoConfig
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoBiMultiHeadAttention

    torch.manual_seed(0)
    config = GroundingDinoConfig(d_model=32, encoder_ffn_dim=64, encoder_attention_heads=4)  # 2 heads of 16 in the fusion
    return GroundingDinoBiMultiHeadAttention(config).double().eval()


def fusion_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    vision = torch.randn(2, 57, 32, generator=generator, dtype=dtype)
    text = torch.randn(2, 7, 32, generator=generator, dtype=dtype)
    vision_padding = torch.zeros(2, 57, dtype=torch.bool)
    vision_padding[1, 40:] = True  # the second frame is padded: its last image tokens are masked for the text
    text_padding = torch.zeros(2, 7, dtype=torch.bool)
    text_padding[1, 5:] = True
    return vision, text, vision_padding, text_padding


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_folded_fusion_attention_matches_transformers(dtype, tolerance):
    from grounded_sam.dino.fusion import folded_fusion_forward

    module = fusion_attention().to(dtype)
    inputs = fusion_inputs(dtype)
    with torch.inference_mode():
        (vision, vision_weights), (text, text_weights) = module(*inputs)
        (our_vision, our_vision_weights), (our_text, our_text_weights) = folded_fusion_forward(module, *inputs)
    assert vision.abs().mean() > 0.01 and text.abs().mean() > 0.01  # both outputs carry signal, so a dropped term shows
    for ours, expected in ((our_vision, vision), (our_text, text), (our_vision_weights, vision_weights), (our_text_weights, text_weights)):
        assert ours.shape == expected.shape and ours.dtype == expected.dtype
        torch.testing.assert_close(ours, expected, atol=tolerance, rtol=tolerance)


def test_folded_fusion_attention_replaces_each_fusion_layer_once():
    from transformers import GroundingDinoConfig, GroundingDinoModel

    from grounded_sam.dino.fusion import folded_fusion_forward, use_folded_fusion_attention

    config = GroundingDinoConfig(d_model=32, encoder_ffn_dim=64, encoder_attention_heads=4, encoder_layers=2, decoder_layers=1,
                                 num_queries=10, backbone_config={"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1],
                                                                  "num_heads": [1, 1, 1, 1], "out_features": ["stage2", "stage3", "stage4"]})  # fmt: skip
    model = GroundingDinoModel(config)
    assert use_folded_fusion_attention(model) == 2
    assert use_folded_fusion_attention(model) == 0  # already switched
    assert all(layer.fusion_layer.attn.forward.__func__ is folded_fusion_forward for layer in model.encoder.layers)
