"""Progress and cancel inside one frame, precision-keyed caches, legacy checkpoint files."""

from __future__ import annotations

import pytest
import torch

from grounded_sam import DetectionSettings, GroundedSam, ModelFileError, RunHooks, load_grounding_dino, load_sam
from grounded_sam.runtime.run_hooks import DETECTION_SHARE, ENCODER_COST_IN_BOXES, STEPS_PER_FRAME, repeated_layers


class Stop(Exception):
    pass


def many_boxes(detector, frame, count: int) -> DetectionSettings:
    """Settings that keep exactly ``count`` boxes (random weights score every query somewhere)."""
    settings = DetectionSettings(0.0, 0.0, nms_iou=None, max_detections=count)
    assert len(detector.detect(frame, "person . tie", settings)) == count
    return settings


def test_progress_moves_through_the_stages_of_one_frame(detector, segmenter, bus):
    frame = bus[:640, :640]
    settings = many_boxes(detector, frame, 40)
    clear_caches(detector, segmenter)
    progress: list[tuple[int, int]] = []
    checks = []
    found = GroundedSam(detector, segmenter).segment(
        frame, "person . tie", settings, RunHooks(on_progress=lambda d, t: progress.append((d, t)), check_cancel=lambda: checks.append(1))
    )
    values = [d for d, _ in progress]
    assert {t for _, t in progress} == {STEPS_PER_FRAME} and values == sorted(values) and values[-1] == STEPS_PER_FRAME
    detected = DETECTION_SHARE * STEPS_PER_FRAME
    encoded = detected + (STEPS_PER_FRAME - detected) * ENCODER_COST_IN_BOXES / (ENCODER_COST_IN_BOXES + 40)
    assert len([v for v in values if v < detected]) >= 10, "detection must move the bar layer by layer"
    assert [v for v in values if detected < v < int(encoded)], "the SAM encoder must move it"
    assert len([v for v in values if v > int(encoded)]) == 3, "and each chunk of 16 boxes"
    assert len(checks) > len(repeated_layers(detector.model)) // 2  # cancel is asked inside the models
    assert len(found) == 40
    assert all(not layer._forward_pre_hooks for layer in repeated_layers(detector.model) + repeated_layers(segmenter.model))


@pytest.mark.parametrize("stop_at", ["detection", "encoder", "decoding"])
def test_cancel_stops_inside_a_frame_and_leaves_the_models_clean(
    detector, segmenter, dino_checkpoint, sam_checkpoint, zidane, monkeypatch, stop_at
):
    frame = zidane[:, 300:940]
    settings = many_boxes(detector, frame, 40)  # 3 chunks of 16 boxes
    clear_caches(detector, segmenter)
    decoded = []
    decode = segmenter._decode
    monkeypatch.setattr(segmenter, "_decode", lambda *a: decoded.append(1) or decode(*a))
    stage = {"stage": "detection"}
    encoder_layers = repeated_layers(segmenter.model.vision_encoder)
    handles = [encoder_layers[0].register_forward_pre_hook(lambda *_: stage.update(stage="encoder"))]
    calls = {"n": 0}

    def check() -> None:
        if decoded:
            stage["stage"] = "decoding"
        calls["n"] += 1
        if stage["stage"] == stop_at and calls["n"] > 3:
            raise Stop

    try:
        with pytest.raises(Stop):
            GroundedSam(detector, segmenter).segment(frame, "person . tie", settings, RunHooks(check_cancel=check))
    finally:
        for handle in handles:
            handle.remove()
    assert len(decoded) == (1 if stop_at == "decoding" else 0)  # stopped after the first chunk, not after all three
    assert stage["stage"] == stop_at
    monkeypatch.undo()
    assert all(len(layer._forward_pre_hooks) == 0 for layer in repeated_layers(detector.model))
    # nothing half-computed was cached: the next run equals a run on fresh models
    again = GroundedSam(detector, segmenter).segment(frame, "person . tie", settings)
    fresh = GroundedSam(load_grounding_dino(dino_checkpoint), load_sam(sam_checkpoint)).segment(frame, "person . tie", settings)
    assert torch.equal(again.boxes, fresh.boxes) and torch.equal(again.masks, fresh.masks)


def clear_caches(detector, segmenter) -> None:
    detector.clear_caches()
    segmenter.clear_caches()
    assert not (len(detector.prediction_cache) or len(detector.backbone_cache) or len(segmenter.embedding_cache))


def test_each_precision_gets_its_own_cache_entries(detector, segmenter, bus, bf16_on_this_cpu):
    frame = bus[:128, :800]  # wide and low: Grounding DINO resizes it to 213x1333, a third of a square's work
    settings = DetectionSettings(0.0, 0.0, nms_iou=None, max_detections=2)
    clear_caches(detector, segmenter)
    warm = {}
    for precision in ("fp16", "bf16", "fp32"):  # one image, the same models, one precision after another
        warm[precision] = GroundedSam(detector, segmenter, precision).segment(frame, "person", settings)
    for precision in ("bf16", "fp32"):  # fp16 ran first, on empty caches: it was fresh
        result = warm[precision]
        clear_caches(detector, segmenter)
        fresh = GroundedSam(detector, segmenter, precision).segment(frame, "person", settings)
        assert torch.equal(result.scores, fresh.scores) and torch.equal(result.boxes, fresh.boxes), precision
        assert torch.equal(result.masks, fresh.masks), precision
    assert not torch.equal(warm["fp16"].scores, warm["bf16"].scores)  # otherwise this test proves nothing


def test_legacy_torch_save_format_loads(tmp_path, reference_sam, sam_checkpoint, bus):
    legacy = tmp_path / "sam_legacy.pth"
    torch.save(reference_sam.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match="mmap"):  # what the loader used to trip over
        torch.load(legacy, weights_only=True, mmap=True)
    old, new = load_sam(legacy), load_sam(sam_checkpoint)
    for (name, a), (_, b) in zip(old.model.state_dict().items(), new.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    truncated = tmp_path / "sam_legacy_truncated.pth"
    truncated.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_sam(truncated)
