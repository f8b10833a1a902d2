"""The record every output is built from: per-frame views and merged masks stay in input order."""

from __future__ import annotations

import torch

from grounded_sam import Detections


def test_for_frame_and_merged_masks():
    masks = torch.zeros((3, 2, 2), dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 0, 1] = True
    found = Detections(
        boxes=torch.arange(12, dtype=torch.float32).view(3, 4),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        labels=("dog", "ball", "dog"),
        frame_index=torch.tensor([2, 0, 2]),
        image_size=(2, 2),
        num_frames=3,
        masks=masks,
    )
    third = found.for_frame(2)
    assert third.labels == ("dog", "dog") and torch.equal(third.boxes, found.boxes[[0, 2]])
    assert len(found.for_frame(1)) == 0
    merged = found.merged_masks()
    assert merged.shape == (3, 2, 2) and not merged[1].any()
    assert torch.equal(merged[0], masks[1]) and torch.equal(merged[2], masks[0] | masks[2])
    assert [row["frame"] for row in found.to_json()] == [2, 0, 2]


def test_packed_masks_round_trip_at_one_bit_a_pixel():
    from grounded_sam.records import PackedMasks

    masks = torch.rand((5, 7, 13), generator=torch.Generator().manual_seed(0)) > 0.5  # width not a multiple of 8
    packed = PackedMasks.pack(masks)
    assert len(packed) == 5 and packed.bits.nbytes == 5 * 7 * 2
    assert torch.equal(packed.unpack(), masks)
    assert len(PackedMasks.pack(torch.zeros((0, 7, 13), dtype=torch.bool))) == 0
