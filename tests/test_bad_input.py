"""Bad images, prompts, settings and model files: a clear error or a documented result, never a crash."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from grounded_sam import (
    DetectionSettings,
    InputError,
    ModelFileError,
    ModelNotFoundError,
    load_grounding_dino,
    load_sam,
)
from grounded_sam.dino.text import MAX_TEXT_TOKENS, bert_tokenizer, caption_from_prompt, tokenize
from grounded_sam.media.images import to_uint8_frames


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_any_channel_count_becomes_rgb(channels):
    image = torch.rand((2, 5, 7, channels))
    frames = to_uint8_frames(image)
    assert frames.shape == (2, 5, 7, 3) and frames.dtype == torch.uint8
    expected = (image[..., :1] if channels < 3 else image[..., :3]) * 255
    assert torch.equal(frames, expected.clamp(0, 255).to(torch.uint8).expand(2, 5, 7, 3))


def test_dtypes_and_missing_batch_dim():
    image = np.random.default_rng(0).random((6, 4, 3))
    assert torch.equal(to_uint8_frames(image), to_uint8_frames(torch.from_numpy(image).float()))  # float64, [H,W,C]
    as_uint8 = (torch.rand(1, 6, 4, 3) * 255).to(torch.uint8)
    assert torch.equal(to_uint8_frames(as_uint8), as_uint8)


def test_nan_pixels_become_black_with_a_warning():
    image = torch.full((1, 2, 2, 3), 0.5)
    image[0, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="NaN"):
        frames = to_uint8_frames(image)
    assert frames[0, 0, 0, 0] == 0 and frames[0, 1, 1, 0] == 127


@pytest.mark.parametrize(
    "shape, message",
    [((0, 4, 4, 3), "empty"), ((1, 0, 4, 3), "empty"), ((1, 3, 8, 8), "channels-first"), ((8, 8), "shape"), ((1, 4, 4, 5), "C = 1")],
)
def test_unusable_shapes_say_what_is_expected(shape, message):
    with pytest.raises(InputError, match=message):
        to_uint8_frames(torch.zeros(shape))


def test_integer_images_other_than_uint8_are_refused():
    with pytest.raises(InputError, match="dtype"):
        to_uint8_frames(torch.zeros((1, 4, 4, 3), dtype=torch.int32))


@pytest.mark.parametrize("prompt", ["", "   ", " . ", "."])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(InputError, match="prompt is empty"):
        caption_from_prompt(prompt)


def test_caption_rules_of_the_original():
    assert caption_from_prompt("  The Dog . red BALL ") == "the dog . red ball."
    assert caption_from_prompt("cat.") == "cat."


def test_over_long_prompt_is_truncated_with_a_warning():
    tokenizer = bert_tokenizer()
    caption = caption_from_prompt(" . ".join(["dog"] * 200))
    with pytest.warns(UserWarning, match="first 256"):
        encoded = tokenize(tokenizer, caption)
    assert encoded["input_ids"].shape == (1, MAX_TEXT_TOKENS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tokenize(tokenizer, "dog .")["input_ids"].shape[1] == 4


@pytest.mark.parametrize("kwargs", [{"box_threshold": 1.5}, {"box_threshold": -0.1}, {"text_threshold": 2}, {"nms_iou": 0}, {"max_detections": -1}])
def test_settings_out_of_range(kwargs):
    with pytest.raises(InputError):
        DetectionSettings(**kwargs)


# --- model files ---------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [load_sam, load_grounding_dino])
def test_missing_empty_random_and_truncated_files(tmp_path, loader, sam_checkpoint):
    with pytest.raises(ModelNotFoundError, match="not found"):
        loader(tmp_path / "nope.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        loader(empty)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="download it again"):
        loader(noise)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(sam_checkpoint.read_bytes()[: sam_checkpoint.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        loader(truncated)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelFileError, match="safetensors"):
        loader(bad_st)


class Payload:
    """A pickled object: loading it would run this class's code."""


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_needs_code_is_refused(tmp_path, zip_format):
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ModelFileError, match="refusing"):
        load_sam(path)


def test_wrong_kind_of_checkpoint_is_named(sam_checkpoint, dino_checkpoint):
    with pytest.raises(ModelFileError, match="Segment Anything checkpoint, not Grounding DINO"):
        load_grounding_dino(sam_checkpoint)
    with pytest.raises(ModelFileError, match="Grounding DINO checkpoint, not SAM"):
        load_sam(dino_checkpoint)


def test_missing_keys_are_named(tmp_path, reference_sam):
    state = reference_sam.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state.pop("image_encoder.blocks.0.mlp.lin1.weight")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError) as err:
        load_sam(path)
    assert "partial.pth" in str(err.value)
    state = reference_sam.state_dict()
    state.pop("image_encoder.blocks.0.mlp.lin1.weight")  # read to find the architecture
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="incomplete: it has no tensor 'image_encoder.blocks.0.mlp.lin1.weight'"):
        load_sam(path)
    state = reference_sam.state_dict()
    state.pop("image_encoder.blocks.1.mlp.lin2.weight")
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"1 missing: vision_encoder\.layers\.1\.mlp\.lin2\.weight; 1 unexpected: mask_decoder\.extra"):
        load_sam(path)


def test_safetensors_twin_is_preferred(tmp_path, reference_sam):
    from safetensors.torch import save_file

    torch.save({"not": "weights"}, tmp_path / "sam.pth")
    save_file({k: v.contiguous() for k, v in reference_sam.state_dict().items()}, tmp_path / "sam.safetensors")
    assert load_sam(tmp_path / "sam.pth").name.startswith("SAM ViT")
