"""Same Grounding DINO weights in the original implementation and ours: same boxes, scores and phrases."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from grounded_sam.dino.convert import config_from_original, fill_unused_model_tensors, rename_original_keys
from grounded_sam.dino.detector import DetectionSettings
from grounded_sam.dino.text import bert_tokenizer, caption_from_prompt, tokenize

pytest.importorskip("groundingdino", reason="rf-groundingdino packages the original implementation (test extra)")
pytestmark = pytest.mark.parity

PROMPT = "person . tie"


@pytest.fixture(scope="module")
def reference64(reference_dino):
    """float64 on both sides: fp32 rounding can swap near-tied proposals at the top-900 cut of a
    random model, which says nothing about the weight mapping; float64 removes it."""
    import copy

    return copy.deepcopy(reference_dino).double()


@pytest.fixture(scope="module")
def detector64(parity_dino_checkpoint):
    from grounded_sam import load_grounding_dino

    return load_grounding_dino(parity_dino_checkpoint).to(dtype=torch.float64)


# The original model's outputs, per (model, frame, caption): each forward pass runs once per module.
_FORWARDS: dict[tuple, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}


def reference_forward(model, frame: torch.Tensor, caption: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The original preprocessing and forward pass: (pixels, {pred_logits, pred_boxes} in float32)."""
    import groundingdino.datasets.transforms as T

    key = (id(model), next(model.parameters()).dtype, frame.data_ptr(), tuple(frame.shape), caption)
    if key not in _FORWARDS:
        transform = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        pixels, _ = transform(Image.fromarray(frame.numpy()), None)
        with torch.no_grad():
            out = model(pixels[None].to(next(model.parameters()).dtype), captions=[caption])
        _FORWARDS[key] = pixels, {k: v.float() for k, v in out.items() if k in ("pred_logits", "pred_boxes")}
    return _FORWARDS[key]


def reference_detect(model, frame: torch.Tensor, prompt: str, box_threshold: float, text_threshold: float):
    """The seed pack's and the original ``inference.predict``'s steps, with the original code."""
    from groundingdino.util.utils import get_phrases_from_posmap

    caption = prompt.lower().strip()
    caption = caption if caption.endswith(".") else caption + "."
    pixels, out = reference_forward(model, frame, caption)
    probs = out["pred_logits"].sigmoid()[0]
    boxes = out["pred_boxes"][0]
    keep = probs.max(dim=1).values > box_threshold
    probs, boxes = probs[keep], boxes[keep]
    tokenized = model.tokenizer(caption)
    phrases = [
        get_phrases_from_posmap(p > text_threshold, tokenized, model.tokenizer).replace(".", "") for p in probs
    ]
    h, w = frame.shape[:2]
    xyxy = boxes * torch.tensor([w, h, w, h])
    xyxy[:, :2] -= xyxy[:, 2:] / 2
    xyxy[:, 2:] += xyxy[:, :2]
    return pixels, probs, xyxy, probs.max(dim=1).values, phrases


def clean(phrase: str) -> str:
    """The original decodes special tokens into its phrases; ours leaves them out."""
    return " ".join(phrase.replace("[SEP]", " ").replace("[CLS]", " ").split())


def test_preprocessing_matches_original(parity_detector, zidane, bus):
    import groundingdino.datasets.transforms as T

    transform = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for frame in (zidane, bus, zidane[:5, :700]):
        ref, _ = transform(Image.fromarray(frame.numpy()), None)
        ours = parity_detector.preprocess(frame)[0]
        assert ours.shape == ref.shape
        assert torch.equal(ours, ref)


def test_tokens_match_original_tokenizer(parity_detector, reference_dino):
    caption = caption_from_prompt("The dog . the RED ball")
    ours = tokenize(parity_detector.tokenizer, caption)["input_ids"][0].tolist()
    assert ours == reference_dino.tokenizer(caption)["input_ids"]
    assert ours == [101, 1996, 3899, 1012, 1996, 2417, 3608, 1012, 102]


def split_thresholds(reference_dino, frame) -> tuple[float, float]:
    """Thresholds that keep a few dozen of the random model's 900 boxes, read off the reference's scores."""
    _, _, _, scores, _ = reference_detect(reference_dino, frame, PROMPT, 0.0, 1.0)
    box_threshold = float(scores.quantile(0.96))
    return box_threshold, box_threshold - 0.03


def test_raw_outputs_match_original(detector64, reference64, zidane):
    pixels, probs, boxes, _, _ = reference_detect(reference64, zidane, PROMPT, 0.0, 1.0)
    ours_probs, ours_boxes = detector64.raw_predictions(pixels[None], tokenize(detector64.tokenizer, caption_from_prompt(PROMPT)))
    assert (ours_probs - probs).abs().max() < 1e-5
    h, w = zidane.shape[:2]
    cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / torch.tensor([w, h, w, h])
    assert (ours_boxes - cxcywh).abs().max() < 1e-5


@pytest.mark.quick
def test_fp32_outputs_match_original_up_to_proposal_ties(parity_detector, reference_dino, zidane):
    """In fp32 the same queries come out, except where near-tied proposals swap at the top-900 cut."""
    pixels, probs, boxes, _, _ = reference_detect(reference_dino, zidane, PROMPT, 0.0, 1.0)
    _, ours_boxes = parity_detector.raw_predictions(pixels[None], tokenize(parity_detector.tokenizer, caption_from_prompt(PROMPT)))
    h, w = zidane.shape[:2]
    ref_boxes = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / torch.tensor([w, h, w, h])
    nearest = torch.cdist(ours_boxes, ref_boxes).min(dim=1).values
    assert (nearest < 1e-3).float().mean() >= 0.95


def test_detections_match_original(detector64, reference64, zidane):
    detector, reference_dino = detector64, reference64
    box_threshold, text_threshold = split_thresholds(reference_dino, zidane)
    pixels, probs, boxes, scores, phrases = reference_detect(reference_dino, zidane, PROMPT, box_threshold, text_threshold)
    assert 0 < len(scores) < 900, "thresholds must split the random model's boxes for the check to mean anything"
    settings = DetectionSettings(box_threshold, text_threshold, nms_iou=None)
    found = detector.detect(zidane, PROMPT, settings)
    assert len(found) == len(scores)
    order = scores.argsort(descending=True)
    torch.testing.assert_close(found.scores, scores[order], atol=1e-4, rtol=0)
    h, w = zidane.shape[:2]
    scale = torch.tensor([w, h, w, h])
    assert ((found.boxes - boxes[order]).abs() / scale).max() < 1e-3  # normalised coordinates within 1e-3
    expected = [clean(phrases[i]) or fallback_phrase(reference_dino, probs[i]) for i in order.tolist()]
    assert list(found.labels) == expected
    assert all(found.labels), "no label may be empty"
    assert any(clean(p) for p in phrases), "some phrase must clear the text threshold"


def fallback_phrase(reference_dino, probs: torch.Tensor) -> str:
    """Where no token clears the text threshold: the prompt phrase holding the top token, read with the original code."""
    from groundingdino.util.utils import get_phrases_from_posmap

    caption = caption_from_prompt(PROMPT)
    tokenized = reference_dino.tokenizer(caption)
    ids = tokenized["input_ids"]
    dot = reference_dino.tokenizer.convert_tokens_to_ids(".")
    words = [i for i in range(1, len(ids) - 1) if ids[i] != dot]
    top = max(words, key=lambda i: float(probs[i]))
    only_top = torch.zeros_like(probs, dtype=torch.bool)
    only_top[top] = True
    word = get_phrases_from_posmap(only_top, tokenized, reference_dino.tokenizer)
    return next(phrase for phrase in PROMPT.split(" . ") if word in phrase.split())


def test_nms_and_max_detections_follow_torchvision(models_dir, bert_small, bus):
    """What happens to the boxes after the model: a narrow Swin (the release's 256-wide transformer, which the
    original needs) is enough, float64 on both sides as above."""
    from reference_models import original_grounding_dino, save_original_release
    from torchvision.ops import nms

    from grounded_sam import load_grounding_dino

    reference_dino = original_grounding_dino(bert_small, swin={"embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]}, enc=1).double()
    detector = load_grounding_dino(save_original_release(reference_dino, models_dir / "groundingdino_narrow_swin.pth")).to(dtype=torch.float64)
    box_threshold, text_threshold = split_thresholds(reference_dino, bus)
    _, _, boxes, scores, _ = reference_detect(reference_dino, bus, PROMPT, box_threshold, text_threshold)
    keep = nms(boxes, scores, 0.7)
    found = detector.detect(bus, PROMPT, DetectionSettings(box_threshold, text_threshold, nms_iou=0.7))
    assert len(found) == len(keep) < len(scores)
    assert ((found.boxes - boxes[keep]).abs().max() / max(bus.shape)) < 1e-3
    capped = detector.detect(bus, PROMPT, DetectionSettings(box_threshold, text_threshold, nms_iou=0.7, max_detections=2))
    torch.testing.assert_close(capped.boxes, found.boxes[:2])


@pytest.mark.parametrize("backbone, embed, window, depths", [("swin_T_224_1k", 96, 7, [2, 2, 6, 2]), ("swin_B_384_22k", 128, 12, [2, 2, 18, 2])])
def test_release_architectures_convert_strictly(bert_small, backbone, embed, window, depths):
    """Swin-T (swint_ogc) and Swin-B (swinb_cogcoor) layouts: 0 missing, 0 unexpected against installed transformers."""
    from reference_models import original_grounding_dino
    from transformers import GroundingDinoForObjectDetection

    model = original_grounding_dino(bert_small, backbone=backbone, enc=6, dec=6)
    state = model.state_dict()
    config = config_from_original(state, backbone)
    assert config.backbone_config.embed_dim == embed and config.backbone_config.window_size == window
    assert list(config.backbone_config.depths) == depths
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)
    ours = GroundingDinoForObjectDetection(config)
    converted = rename_original_keys(state)
    assert not [k for k in converted if k.startswith("unmapped:")]
    fill_unused_model_tensors(converted, ours.state_dict())
    result = ours.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_packaged_vocab_is_bert_base_uncased():
    tokenizer = bert_tokenizer()
    assert len(tokenizer.vocab) == 30522
    ids = tokenizer("a cat . a dog .")["input_ids"]
    assert ids == [101, 1037, 4937, 1012, 1037, 3899, 1012, 102]
    assert tokenizer.convert_ids_to_tokens([0, 100, 103]) == ["[PAD]", "[UNK]", "[MASK]"]
