"""Same SAM weights in Meta's code and ours: same masks (IoU >= 0.999)."""

from __future__ import annotations

import pytest
import torch
from reference_models import meta_predictor, meta_sam

from grounded_sam import load_sam
from grounded_sam.sam.load import segmenter_from_meta_module

pytest.importorskip("segment_anything", reason="Meta's segment-anything is the reference (test extra)")
pytestmark = pytest.mark.parity


def boxes_for(frame: torch.Tensor) -> torch.Tensor:
    h, w = frame.shape[:2]
    return torch.tensor(
        [[0.05 * w, 0.35 * h, 0.4 * w, 0.85 * h], [0.0, 0.0, w - 1.0, h - 1.0], [0.3 * w, 0.2 * h, 0.8 * w, 0.6 * h]]
    )


def reference_masks(model, frame: torch.Tensor, boxes: torch.Tensor, kind: str = "vit", hq: bool = False) -> torch.Tensor:
    predictor = meta_predictor(model, kind, hq)
    image = frame.numpy()
    predictor.set_image(image)
    prompt = predictor.transform.apply_boxes_torch(boxes, image.shape[:2])
    kwargs = {"hq_token_only": False} if hq else {}
    masks, _, _ = predictor.predict_torch(None, None, boxes=prompt, multimask_output=False, **kwargs)
    return masks[:, 0]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def assert_same_masks(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    for i in range(ref.shape[0]):
        assert ref[i].any() and not ref[i].all(), "a degenerate reference mask proves nothing"
        assert iou(ours[i], ref[i]) >= 0.999, f"mask {i}: IoU {iou(ours[i], ref[i]):.5f}"


def run_ours(segmenter, frame, boxes):
    return segmenter.masks_for_boxes(segmenter.embed(frame), boxes)


@pytest.mark.quick
def test_vit_sam_matches_meta(reference_sam, segmenter, bus):
    boxes = boxes_for(bus)
    assert_same_masks(run_ours(segmenter, bus, boxes), reference_masks(reference_sam, bus, boxes))


def test_vit_sam_from_safetensors_matches_meta(reference_sam, models_dir, zidane):
    from safetensors.torch import save_file

    path = models_dir / "sam_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference_sam.state_dict().items()}, path)
    boxes = boxes_for(zidane)
    assert_same_masks(run_ours(load_sam(path), zidane, boxes), reference_masks(reference_sam, zidane, boxes))


@pytest.mark.quick
def test_hq_sam_matches_reference(models_dir, bus):
    pytest.importorskip("segment_anything_hq", reason="segment-anything-hq is the HQ-SAM reference")
    model = meta_sam(hq=True, seed=1)
    path = models_dir / "sam_hq_tiny.pth"
    torch.save(model.state_dict(), path)
    ours = load_sam(path)
    assert ours.is_hq and ours.name.startswith("HQ-SAM")
    boxes = boxes_for(bus)
    assert_same_masks(run_ours(ours, bus, boxes), reference_masks(model, bus, boxes, hq=True))


@pytest.mark.quick
def test_mobile_sam_matches_reference(models_dir, zidane):
    pytest.importorskip("mobile_sam", reason="mobilesam-mirror packages the MobileSAM reference")
    model = meta_sam(kind="tiny_vit", seed=2)
    path = models_dir / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    ours = load_sam(path)
    assert ours.name == "MobileSAM (TinyViT)"
    boxes = boxes_for(zidane)
    embedding = ours.embed(zidane)
    predictor = meta_predictor(model, "tiny_vit")
    predictor.set_image(zidane.numpy())
    assert torch.allclose(embedding.embeddings, predictor.features, atol=1e-4, rtol=1e-4)
    assert_same_masks(ours.masks_for_boxes(embedding, boxes), reference_masks(model, zidane, boxes, "tiny_vit"))


def test_segment_anything_module_from_another_pack_is_accepted(reference_sam, bus):
    """Impact Pack's SAMLoader hands over a segment_anything ``Sam`` under the same SAM_MODEL type."""
    boxes = boxes_for(bus)[:1]
    ours = segmenter_from_meta_module(reference_sam)
    assert_same_masks(run_ours(ours, bus, boxes), reference_masks(reference_sam, bus, boxes))


@pytest.mark.parametrize(
    "name, embed, depth, heads, global_blocks",
    [("vit_b", 768, 12, 12, [2, 5, 8, 11]), ("vit_l", 1024, 24, 16, [5, 11, 17, 23]), ("vit_h", 1280, 32, 16, [7, 15, 23, 31])],
)
def test_released_sam_architectures_convert_strictly(name, embed, depth, heads, global_blocks):
    """Full-size Meta layouts: every tensor maps, nothing is left over, the architecture is read back."""
    from segment_anything import sam_model_registry

    from grounded_sam.sam.convert import detect_architecture, rename_meta_keys
    from grounded_sam.sam.load import build_sam_model

    torch.manual_seed(0)
    state = sam_model_registry[name]().state_dict()
    arch = detect_architecture(state, name)
    assert arch.vision["hidden_size"] == embed and arch.vision["num_hidden_layers"] == depth
    assert arch.vision["num_attention_heads"] == heads and arch.vision["global_attn_indexes"] == global_blocks
    model = build_sam_model(arch)
    renamed = rename_meta_keys(state, arch)
    assert set(renamed) == set(model.state_dict())
    result = model.load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
