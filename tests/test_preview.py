"""The preview picture: every pixel it changes is explained by an object's mask, outline, box or label."""

from __future__ import annotations

import numpy as np
import torch

from grounded_sam.media.preview import MASK_ALPHA, draw_preview, draw_previews, object_colour
from grounded_sam.records import Detections


def two_objects(h: int = 120, w: int = 160, frame: int = 0, frames: int = 1) -> Detections:
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    masks[0, 40:100, 20:70] = True
    masks[1, 50:60, 110:125] = True  # a small object
    return Detections(
        boxes=torch.tensor([[20.0, 40.0, 70.0, 100.0], [110.0, 50.0, 125.0, 60.0]]), scores=torch.tensor([0.9, 0.4]),
        labels=("dog", "red ball"), frame_index=torch.full((2,), frame), image_size=(h, w), num_frames=frames, masks=masks,
    )  # fmt: skip


def test_masks_are_tinted_in_their_colour_and_the_rest_is_untouched():
    frame = torch.full((120, 160, 3), 100, dtype=torch.uint8)
    found = two_objects()
    picture = draw_preview(frame, found).numpy().astype(int)
    assert picture.shape == (120, 160, 3)
    blended = np.round(100 * (1 - MASK_ALPHA) + np.array(object_colour(0)) * MASK_ALPHA)
    assert (picture[70, 45] == blended).all()  # deep inside the dog's mask: frame and colour mixed
    assert (picture[41, 45] == object_colour(0)).all()  # its outline (and box edge): the pure colour
    assert (picture[110:, :] == 100).all() and (picture[70:, 140:] == 100).all()  # nowhere near an object: unchanged
    # each object has its own colour and its label tag in that colour above its box
    assert object_colour(0) != object_colour(1)
    tag = picture[25:40, 20:70].reshape(-1, 3)
    assert (tag == object_colour(0)).all(axis=1).mean() > 0.3
    assert (tag.sum(axis=1) < 150).sum() >= 5  # the text: black (anti-aliased) on this light tag


def test_dark_and_bright_frames_keep_black_or_white_text_on_the_tags():
    for value in (0, 255):
        frame = torch.full((120, 160, 3), value, dtype=torch.uint8)
        picture = draw_preview(frame, two_objects()).numpy()
        assert (picture[70, 45] != value).any()  # the mask tint shows on black and on white


def test_labels_never_pile_up():
    n = 30
    masks = torch.zeros((n, 200, 200), dtype=torch.bool)
    masks[:, 100:110, 100:110] = True
    found = Detections(
        boxes=torch.tensor([[100.0, 100.0, 110.0, 110.0]]).repeat(n, 1), scores=torch.linspace(0.9, 0.3, n), labels=("x",) * n,
        frame_index=torch.zeros(n, dtype=torch.int64), image_size=(200, 200), num_frames=1, masks=masks,
    )  # fmt: skip
    picture = draw_preview(torch.zeros((200, 200, 3), dtype=torch.uint8), found).numpy()
    tag = picture[80:100, 100:140].reshape(-1, 3)
    colours = {tuple(c) for c in tag.tolist()} - {(0, 0, 0), (255, 255, 255)}
    assert tuple(object_colour(0)) in colours  # the best object's label is the one shown
    assert not {tuple(object_colour(k)) for k in range(1, n)} & colours


def test_each_frame_of_a_batch_shows_its_own_objects():
    frames = torch.full((2, 120, 160, 3), 100, dtype=torch.uint8)
    found = Detections.concat([two_objects(frame=1, frames=2)], 2, (120, 160))
    pictures = draw_previews(frames, found).numpy()
    assert (pictures[0] == 100).all()
    assert (pictures[1] != 100).any()
