"""Video tracking: ids on hand-drawn masks, SAM 2.1 propagation against Meta's video predictor, the tracker, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grounded_sam import DetectionSettings, GroundedSam, InputError, load_sam
from grounded_sam.records import Detections
from grounded_sam.video.frames import open_frames
from grounded_sam.video.identities import SAME_TRACK_IOU, Identities, match_to_tracks
from grounded_sam.video.propagation import Propagation

CLIP = Path(__file__).resolve().parents[2] / "shared" / "videos" / "bigbuckbunny.mp4"


def box_mask(x0: int, y0: int, x1: int, y1: int, size: tuple[int, int] = (40, 60)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --- ids on masks drawn by hand ------------------------------------------------------------


def test_objects_that_enter_leave_cross_hide_and_return_keep_their_ids():
    book = Identities(lost_after=5)
    empty = torch.zeros((40, 60), dtype=torch.bool)
    # frame 0: A enters on the left
    a = box_mask(0, 10, 10, 20)
    assert book.assign(a[None], {}) == [1]
    assert book.seen(0, {1: a}) == []
    # frame 3: A moved a little; B enters on the right: A keeps 1, B gets 2
    a, b = box_mask(2, 10, 12, 20), box_mask(50, 10, 60, 20)
    assert book.assign(torch.stack([b, a]), {1: box_mask(1, 10, 11, 20)}) == [2, 1]
    book.seen(3, {1: a, 2: b})
    # frame 6: they cross, side by side in the middle; each detection follows its own track's mask
    a, b = box_mask(28, 10, 38, 20), box_mask(22, 10, 32, 20)
    assert book.assign(torch.stack([a, b]), {1: box_mask(27, 10, 37, 20), 2: box_mask(23, 10, 33, 20)}) == [1, 2]
    book.seen(6, {1: a, 2: b})
    # frames 7-9: B hides (its mask is empty); at 9 it comes back where it was last seen: the same id
    book.seen(7, {1: a, 2: empty})
    book.seen(8, {1: a, 2: empty})
    assert book.assign(box_mask(22, 10, 32, 20)[None], {1: a, 2: empty}) == [2]
    book.seen(9, {1: a, 2: box_mask(22, 10, 32, 20)})
    # A leaves: unseen for more than lost_after frames, its track ends, and its id is never given again
    for index in range(10, 16):
        ended = book.seen(index, {1: empty, 2: box_mask(22, 10, 32, 20)})
    assert ended == [1] and book.live == [2]
    assert book.assign(a[None], {2: box_mask(22, 10, 32, 20)}) == [3]


def test_one_detection_over_two_tracks_joins_the_one_it_overlaps_more():
    left, right = box_mask(0, 0, 20, 20), box_mask(14, 0, 34, 20)
    both = box_mask(4, 0, 26, 20)  # overlaps left by 16 columns, right by 12
    assert match_to_tracks(both[None], torch.stack([left, right])) == [0]
    book = Identities(lost_after=5)
    book.assign(torch.stack([left, right]), {})
    book.seen(0, {1: left, 2: right})
    assert book.assign(torch.stack([both, box_mask(16, 0, 34, 20)]), {1: left, 2: right}) == [1, 2]


def test_overlap_below_the_threshold_is_a_new_object():
    a = box_mask(0, 0, 10, 10)
    shifted = box_mask(6, 0, 16, 10)  # IoU 4/16 = 0.25
    assert 0.25 < SAME_TRACK_IOU
    book = Identities(lost_after=5)
    book.assign(a[None], {})
    book.seen(0, {1: a})
    assert book.assign(shifted[None], {1: a}) == [2]
    assert book.assign(shifted[None], {1: a}, room=0) == [None]  # no room: dropped, no id used
    assert book.assign(torch.zeros((1, 40, 60), dtype=torch.bool), {1: a}) == [None]  # an empty mask starts nothing


def test_track_id_is_a_registered_per_object_field():
    part = Detections.empty(1, (4, 4), with_masks=False)
    tracked = Detections(
        boxes=torch.zeros((1, 4)), scores=torch.ones(1), labels=("a",), frame_index=torch.zeros(1, dtype=torch.int64),
        image_size=(4, 4), num_frames=1, track_id=torch.tensor([7]),
    )
    untracked = Detections(
        boxes=torch.zeros((1, 4)), scores=torch.ones(1), labels=("b",), frame_index=torch.ones(1, dtype=torch.int64),
        image_size=(4, 4), num_frames=2,
    )
    joined = Detections.concat([part, tracked, untracked], 2, (4, 4))
    assert joined.track_id.tolist() == [7, -1]  # filled, never dropped
    assert joined.select(torch.tensor([0])).track_id.tolist() == [7]
    assert joined.to_json()[0]["track_id"] == 7


# --- clips ---------------------------------------------------------------------------------


def clip_frames(count: int, folder: Path | None = None, size: tuple[int, int] | None = None) -> list[torch.Tensor]:
    """The first ``count`` frames of the shared clip (as JPEG files in ``folder`` when given, read back)."""
    frames = []
    for index, frame in enumerate(open_frames(CLIP)):
        if index == count:
            break
        picture = Image.fromarray(frame.numpy())
        if size is not None:
            picture = picture.resize(size, Image.BILINEAR)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / f"{index:05d}.jpg", quality=95)
            picture = Image.open(folder / f"{index:05d}.jpg").convert("RGB")
        frames.append(torch.from_numpy(np.asarray(picture).copy()))
    return frames


@pytest.mark.parity
@pytest.mark.parametrize(("size", "count"), [(512, 16), (1024, 3)], ids=["16 frames at 512", "3 frames at full size"])
def test_sam21_propagation_matches_meta_video_predictor(sam2_tiny, tmp_path, size, count):
    """Frames of the shared clip, two box prompts on frame 0, ``propagate_in_video``: per frame, per object.

    The release file through our loader on both sides. Sixteen frames (the whole memory window
    filled, and object pointers from up to 15 frames back) run at 512 pixels on both sides, the
    same weights read at a smaller input size (memory attention costs the square of the tokens:
    about 40 s instead of about 290 s); three frames run at the release's 1024, its real config.
    Meta's predictor is built with ``fill_hole_area=8`` but skips hole filling without its CUDA
    extension (it warns); ours never fills holes, so both run the same maths here.
    """
    pytest.importorskip("sam2")
    from reference_models import sam2_video_at_size
    from sam2.build_sam import build_sam2_video_predictor

    _, path = sam2_tiny
    frames = clip_frames(count, tmp_path / "frames")
    boxes = torch.tensor([[300.0, 100.0, 900.0, 600.0], [50.0, 300.0, 400.0, 700.0]])
    overrides = [f"++model.image_size={size}"] if size != 1024 else []
    predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(path), device="cpu", hydra_overrides_extra=overrides)
    state = predictor.init_state(str(tmp_path / "frames"))
    for obj_id, box in enumerate(boxes, start=1):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box.numpy())
    reference = {index: logits[:, 0].clone() for index, _, logits in predictor.propagate_in_video(state)}
    assert sorted(reference) == list(range(count))

    video = load_sam(path, "cpu").video
    assert video.config.image_size == 1024  # the release's size, as loaded
    ours = Propagation(video if size == 1024 else sam2_video_at_size(video, size), tuple(frames[0].shape[:2]))
    assert ours.image_size == size
    ours.add_boxes(0, [1, 2], boxes)
    worst_iou, worst_logit = 1.0, 0.0
    for index, frame in enumerate(frames):
        ids, low_res, _ = ours.step(index, frame)
        assert ids == [1, 2]
        logits = torch.nn.functional.interpolate(low_res.unsqueeze(1), frame.shape[:2], mode="bilinear", align_corners=False)[:, 0]
        ref = reference[index]
        cover = (ref > 0).float().mean((1, 2))
        assert ((cover > 0.05) & (cover < 0.95)).all(), f"frame {index}: reference masks cover {cover.tolist()}: trivial"
        masks, ref_masks = logits > 0, ref > 0
        iou = (masks & ref_masks).sum((1, 2)) / (masks | ref_masks).sum((1, 2))
        worst_iou = min(worst_iou, float(iou.min()))
        worst_logit = max(worst_logit, float((logits - ref).abs().max()))
        assert torch.equal(ours.full_size(low_res), masks)
    print(f"SAM 2.1 propagation vs Meta at {size}, {count} frames x 2 objects: min mask IoU {worst_iou:.6f}, max |logit diff| {worst_logit:.2e}")
    assert worst_iou >= 0.999, worst_iou
    assert worst_logit < 1e-3, worst_logit
    # only the memory window is held: no frame's pixels nor image features once it is done, no output older than 16 frames
    assert not ours.session.processed_frames and not ours.session.cache._vision_features
    assert all(min(out["non_cond_frame_outputs"]) >= count - 1 - 16 for out in ours.session.output_dict_per_obj.values())


@pytest.mark.parity
def test_sam21_memory_past_its_window_with_objects_added_and_removed_matches_meta(sam2_tiny, tmp_path):
    """24 frames (past ``MEMORY_FRAMES``, so ``Propagation._forget`` prunes memories Meta still holds), object 1
    from frame 0, objects 2 and 3 added on frame 5 (Meta: ``add_new_points_or_box`` after tracking started),
    object 3 removed on frame 12 (Meta: ``remove_object``; ours: ``drop``, which renumbers the session), and
    a backward pass from frame 7 against Meta's ``reverse=True``: per frame, per object, masks and logits.
    At 256 pixels (the same weights; memory attention costs the square of the tokens) to stay in CI's budget.
    """
    pytest.importorskip("sam2")
    from reference_models import sam2_video_at_size
    from sam2.build_sam import build_sam2_video_predictor

    from grounded_sam.video.propagation import MEMORY_FRAMES

    count, size, added, removed = 24, 256, 5, 12
    assert count > MEMORY_FRAMES + 1 + added
    _, path = sam2_tiny
    frames = clip_frames(count, tmp_path / "frames", size=(320, 180))
    a, b, c = torch.tensor([[10.0, 20.0, 150.0, 170.0]]), torch.tensor([[200.0, 10.0, 310.0, 90.0]]), torch.tensor([[120.0, 60.0, 240.0, 170.0]])
    predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(path), device="cpu",
                                           hydra_overrides_extra=[f"++model.image_size={size}"])
    state = predictor.init_state(str(tmp_path / "frames"))
    reference: dict[int, dict[int, torch.Tensor]] = {}

    def run(**kwargs) -> None:
        for index, ids, logits in predictor.propagate_in_video(state, **kwargs):
            reference[index] = {obj: logits[row, 0].clone() for row, obj in enumerate(ids)}

    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=a[0].numpy())
    run(start_frame_idx=0, max_frame_num_to_track=added - 1)
    predictor.add_new_points_or_box(state, frame_idx=added, obj_id=2, box=b[0].numpy())
    predictor.add_new_points_or_box(state, frame_idx=added, obj_id=3, box=c[0].numpy())
    run(start_frame_idx=added, max_frame_num_to_track=removed - added - 1)
    predictor.remove_object(state, 3)
    run(start_frame_idx=removed)
    assert sorted(reference) == list(range(count))

    video = sam2_video_at_size(load_sam(path, "cpu").video, size)
    ours = Propagation(video, (180, 320))
    ours.add_boxes(0, [1], a)
    worst_iou, worst_logit = 1.0, 0.0

    def compare(index: int, ids: list[int], low_res: torch.Tensor, want: dict[int, torch.Tensor]) -> None:
        nonlocal worst_iou, worst_logit
        assert ids == sorted(want), (index, ids, sorted(want))
        logits = torch.nn.functional.interpolate(low_res.unsqueeze(1), (180, 320), mode="bilinear", align_corners=False)[:, 0]
        ref = torch.stack([want[i] for i in ids])
        cover = (ref > 0).float().mean((1, 2))
        assert ((cover > 0.05) & (cover < 0.95)).all(), f"frame {index}: reference masks cover {cover.tolist()}: trivial"
        masks, ref_masks = logits > 0, ref > 0
        worst_iou = min(worst_iou, float(((masks & ref_masks).sum((1, 2)) / (masks | ref_masks).sum((1, 2))).min()))
        worst_logit = max(worst_logit, float((logits - ref).abs().max()))

    for index, frame in enumerate(frames):
        if index == added:
            ours.add_boxes(added, [2, 3], torch.cat([b, c]))
        if index == removed:
            ours.drop([3])
        ids, low_res, _ = ours.step(index, frame)
        compare(index, ids, low_res, reference[index])
    # the window was pruned: object 1's oldest tracked outputs are gone, its prompted frame kept
    outputs = ours.session.output_dict_per_obj[ours.session._obj_id_to_idx[1]]
    assert min(outputs["non_cond_frame_outputs"]) == count - 1 - MEMORY_FRAMES and list(outputs["cond_frame_outputs"]) == [0]
    print(f"forward, {count} frames, objects added on {added} and removed on {removed}: min IoU {worst_iou:.6f}, max |logit diff| {worst_logit:.2e}")

    # backwards: Meta's reverse propagation from a box on frame 7
    start = 7
    state = predictor.init_state(str(tmp_path / "frames"))
    reference.clear()
    predictor.add_new_points_or_box(state, frame_idx=start, obj_id=1, box=b[0].numpy())
    run(start_frame_idx=start, reverse=True)
    assert sorted(reference) == list(range(start + 1))
    back = Propagation(video, (180, 320), reverse=True)
    back.add_boxes(start, [1], b)
    for index in range(start, -1, -1):
        ids, low_res, _ = back.step(index, frames[index])
        compare(index, ids, low_res, reference[index])
    print(f"forward and backward: min mask IoU {worst_iou:.6f}, max |logit diff| {worst_logit:.2e}")
    assert worst_iou >= 0.999, worst_iou
    assert worst_logit < 1e-3, worst_logit


@pytest.mark.parity
def test_sam3_tracker_matches_meta_tracker(sam3_release):
    """SAM 3 in the SAM socket tracks as Meta's ``Sam3TrackerPredictor`` (the tracker in its ``sam3.pt``, built by
    ``build_tracker`` as Meta's video model builds it): frames of the shared clip, two box prompts on frame 0,
    ``propagate_in_video``; per frame, per object, logits and masks.

    Meta's tracker reads the frames' pixels as our detector prepares them (its frame loader rounds them to
    float16), and its backbone is the image model's, the one our tracker shares with the detector. It
    runs on the CPU with its CUDA calls made no-ops. Three frames: the last reads the memories and object pointers of
    the prompted frame and of a tracked one (one memory-attention layer, as the test file has). Meta fills no holes here (``fill_hole_area=0``).
    """
    from unittest import mock

    from reference_models import meta_sam3_on_cpu

    from grounded_sam.sam3.tracker import Sam3Tracker

    model, path = sam3_release
    count = 3
    frames = clip_frames(count)
    h, w = frames[0].shape[:2]
    boxes = torch.tensor([[300.0, 100.0, 900.0, 600.0], [50.0, 300.0, 400.0, 700.0]])  # overlapping: the memory's masks must not
    segmenter = load_sam(path, "cpu")
    assert isinstance(segmenter.video, Sam3Tracker)
    assert segmenter.video.prompt_encoder.point_embed.weight is segmenter.detector.box_head.prompt_encoder.point_embed.weight  # held once
    pixels = torch.cat([segmenter.detector.preprocess(frame) for frame in frames])

    tracker = model.inst_interactive_predictor.model
    tracker.backbone = model.backbone
    try:
        with meta_sam3_on_cpu(), mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self):
            state = tracker.init_state(video_height=h, video_width=w, num_frames=count, offload_state_to_cpu=True)
            state["images"] = pixels
            for obj_id, box in enumerate(boxes, start=1):
                tracker.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box / torch.tensor([w, h, w, h]))
            run = tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=count - 1, reverse=False, propagate_preflight=True)
            reference = {index: (low[:, 0].clone(), full[:, 0].clone()) for index, _, low, full, _ in run}
    finally:
        tracker.backbone = None
    assert sorted(reference) == list(range(count))

    ours = Propagation(segmenter.video, (h, w), read_frame=segmenter.video_frame)
    ours.add_boxes(0, [1, 2], boxes)
    worst_iou, worst_logit = 1.0, 0.0
    for index, frame in enumerate(frames):
        ids, low_res, _ = ours.step(index, frame)
        assert ids == [1, 2]
        ref_low, ref = reference[index]
        logits = torch.nn.functional.interpolate(low_res.unsqueeze(1), (h, w), mode="bilinear", align_corners=False)[:, 0]
        cover = (ref > 0).float().mean((1, 2))
        assert ((cover > 0.05) & (cover < 0.95)).all(), f"frame {index}: reference masks cover {cover.tolist()}: trivial"
        masks, ref_masks = logits > 0, ref > 0
        assert (masks[0] & masks[1]).any()  # the objects' masks overlap: Meta's memory keeps them apart
        iou = (masks & ref_masks).sum((1, 2)) / (masks | ref_masks).sum((1, 2))
        worst_iou = min(worst_iou, float(iou.min()))
        worst_logit = max(worst_logit, float((low_res - ref_low).abs().max()), float((logits - ref).abs().max()))
        assert torch.equal(ours.full_size(low_res), masks)
    print(f"SAM 3 tracker vs Meta, {count} frames x 2 objects: min mask IoU {worst_iou:.6f}, max |logit diff| {worst_logit:.2e}")
    assert worst_iou >= 0.999, worst_iou
    assert worst_logit < 1e-3, worst_logit


@pytest.mark.parity
def test_hub_sam2_video_folder_tracks_like_the_release_file(sam2_tiny, sam2_video_folder_512, tmp_path, bus):
    """The hub's ``sam2_video`` layout tracks, its image model and video memory one set of weights; a ``sam2``
    folder (image only) segments but refuses to track, saying what to load."""
    from reference_models import sam2_video_at_size

    from grounded_sam.sam.sam2_segmenter import Sam2Segmenter

    release = load_sam(sam2_tiny[1], "cpu")
    hub = load_sam(sam2_video_folder_512, "cpu")
    assert isinstance(hub, Sam2Segmenter) and hub.name == "SAM 2 Hiera-T" and hub.video is not None
    assert hub.model.vision_encoder.neck.convs[0].weight is hub.video.vision_encoder.neck.convs[0].weight  # shared
    assert hub.video.config.image_size == hub.image_size == 512
    frames = clip_frames(3, size=(320, 180))
    expected = Propagation(sam2_video_at_size(release.video, 512), (180, 320))
    ours = Propagation(hub.video, (180, 320))
    box = torch.tensor([[10.0, 20.0, 150.0, 170.0]])
    for run in (expected, ours):
        run.add_boxes(0, [1], box)
    for index, frame in enumerate(frames):
        want, got = expected.step(index, frame)[1], ours.step(index, frame)[1]
        assert (got - want).abs().max() < 1e-4 and torch.equal(ours.full_size(got), expected.full_size(want)), index
        assert 0 < int((want > 0).sum()) < want.numel(), "a trivial mask proves nothing"
    # its image path segments too (at its own 512)
    boxes = torch.tensor([[50.0, 60.0, 400.0, 500.0]])
    embedding = hub.embed(bus)
    assert embedding is not None and 0 < int(hub.masks_for_boxes(embedding, boxes).sum())
    release.model.save_pretrained(tmp_path / "sam2")
    image_only = load_sam(tmp_path / "sam2", "cpu")
    assert image_only.video is None
    with pytest.raises(InputError, match="sam2_video folder to track"):
        next(iter(GroundedSam(ScriptedDetector([], (180, 320)), image_only, "fp32").track(torch.stack(frames), "bunny")))


class ScriptedDetector:
    """Boxes given per frame, in place of a text detector: the tracker's bookkeeping on known detections.

    A ``Detector`` (the protocol the pipeline checks): it is asked once per detection frame, in order.
    """

    name = "scripted boxes"

    def __init__(self, script: list[tuple], size: tuple[int, int]) -> None:
        """``script``: per detection frame, (boxes, labels) or (boxes, labels, phrase index of each box)."""
        self.script = list(script)
        self.size = size
        self.model = torch.nn.Linear(1, 1)
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def module(self) -> torch.nn.Module:
        return self.model

    def to(self, device=None, dtype=None):
        return self

    def clear_caches(self) -> None:
        pass

    def detect(self, frame, prompt, settings) -> Detections:
        boxes, labels, *phrases = self.script[self.calls]
        self.calls += 1
        n = len(boxes)
        phrase_index = torch.tensor(phrases[0], dtype=torch.int64) if phrases else torch.zeros(n, dtype=torch.int64)
        return Detections(
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), scores=torch.linspace(0.9, 0.5, n) if n else torch.zeros(0),
            labels=tuple(labels), frame_index=torch.zeros(n, dtype=torch.int64), image_size=self.size, num_frames=1,
            phrase_index=phrase_index,
        )


@pytest.fixture(scope="module")
def sam21(sam2_tiny):
    return load_sam(sam2_tiny[1], "cpu")


@pytest.fixture(scope="module")
def sam21_at_512(sam21):
    """The same SAM 2.1 weights tracking at 512 pixels (what is checked here is the tracker's bookkeeping, not the size)."""
    from reference_models import sam2_video_at_size

    from grounded_sam.sam.sam2_segmenter import Sam2Segmenter

    return Sam2Segmenter(sam21.model, sam21.name, sam2_video_at_size(sam21.video, 512))


@pytest.mark.parity  # SAM 2.1 end to end, its frames compared with SAM 2's own propagation: the heavy tier
def test_tracker_keeps_ids_and_follows_late_objects_backwards(sam21_at_512):
    sam21 = sam21_at_512
    frames = clip_frames(4, size=(320, 180))
    size = (180, 320)
    a, b = [10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0]
    # (with random weights SAM 2's propagated mask of a drifts from a fresh box mask of a, so a
    # re-detection of a would be a coin toss; ids on re-detection are tested on drawn masks above)
    detector = ScriptedDetector([([a], ["bunny"]), ([b], ["bird"])], size)
    pipeline = GroundedSam(detector, sam21, precision="fp32")
    encodings = []
    hook = sam21.video.vision_encoder.register_forward_hook(lambda module, args, out: encodings.append(1))
    try:
        results = list(pipeline.track(torch.stack(frames), "bunny . bird", redetect_every=2, backtrack=2))
    finally:
        hook.remove()
    assert detector.calls == 2 and len(results) == 4
    # each frame is encoded once: the backward pass over frames 2, 1, 0 reads the forward pass's features
    assert len(encodings) == 4, len(encodings)
    ids = [r.track_id.tolist() for r in results]
    assert all(len(set(i)) == len(i) for i in ids)
    # track 1 is on every frame, and its masks on frames 0-1 are SAM 2's own propagation of box a
    alone = Propagation(sam21.video, size)
    alone.add_boxes(0, [1], torch.tensor([a]))
    for index in range(2):
        found = results[index]
        row = found.track_id.tolist().index(1)
        expected = alone.full_size(alone.step(index, frames[index])[1])[0]
        assert torch.equal(found.masks[row], expected)
        assert 0 < int(expected.sum()) < expected.numel()
    # b, first found on frame 2, is a new track (2) with masks on the frames before it too
    assert all(2 in i for i in ids[2:]), ids
    assert all(2 in i for i in ids[:2]), f"no backward pass: {ids}"
    # ... and they are SAM 2's own reverse propagation of box b, every frame encoded afresh
    back = Propagation(sam21.video, size, reverse=True)
    back.add_boxes(2, [2], torch.tensor([b]))
    back.step(2, frames[2])
    for index in (1, 0):
        expected = back.full_size(back.step(index, frames[index])[1])[0]
        found = results[index]
        assert torch.equal(found.masks[found.track_id.tolist().index(2)], expected)
        assert 0 < int(expected.sum()) < expected.numel()
    assert {r.labels[r.track_id.tolist().index(2)] for r in results} == {"bird"}
    for found in results:
        assert found.masks.shape[1:] == size and found.num_frames == 1
        for k in range(len(found)):  # the box is the mask's extent
            ys, xs = found.masks[k].nonzero(as_tuple=True)
            assert found.boxes[k].tolist() == [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_a_track_out_of_sight_for_an_interval_leaves_the_memory_pass_and_comes_back_on_a_detection(sam21_at_512):
    """Parking: track b, unseen from frame 1, leaves the memory pass after one detection interval (memory attention
    runs for a alone from then on), and a detection of b on frame 6 brings it back under its id; every frame's
    masks equal those of the run that keeps b in memory throughout (``park_absent=False``)."""
    import copy

    from grounded_sam.sam.sam2_segmenter import Sam2Segmenter

    video = copy.deepcopy(sam21_at_512.video)
    with torch.no_grad():  # random weights: objects present where a box prompts them, absent on frames tracked from memory
        video.mask_decoder.pred_obj_score_head.proj_out.weight.mul_(200.0)
    sam21 = Sam2Segmenter(sam21_at_512.model, sam21_at_512.name, video)
    objects_attended = []
    video.memory_attention.register_forward_hook(lambda module, args, out: objects_attended.append(int(out.shape[1])))  # [1, objects, ...]
    frames = clip_frames(8, size=(320, 180))
    size = (180, 320)
    a, b = [10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0]
    script = [([a, b], ["bunny"] * 2), ([a], ["bunny"]), ([a], ["bunny"]), ([a, b], ["bunny"] * 2)]
    runs = {}
    for park in (False, True):
        objects_attended.clear()
        pipeline = GroundedSam(ScriptedDetector(script, size), sam21, "fp32")
        results = list(pipeline.track(torch.stack(frames), "bunny", redetect_every=2, backtrack=0, park_absent=park))
        runs[park] = (results, sum(objects_attended))
    kept, parked = runs[False][0], runs[True][0]
    # the case is the one parking is for: b is out of sight on frames 1-5, a is seen on every detection frame
    assert [r.track_id.tolist() for r in kept] == [[1, 2], [], [1], [], [1], [], [1, 2], []]
    for held, found in zip(kept, parked, strict=True):
        assert found.track_id.tolist() == held.track_id.tolist()
        assert torch.equal(found.masks, held.masks)
        assert all(0 < int(m.sum()) < m.numel() for m in found.masks)
    # kept in memory, b costs a memory attention on each of frames 1-7; parked after frame 2, none on frames 3-6
    # (on 6 the detection prompts it afresh, without memory): 4 fewer of the 14
    assert runs[False][1] == 14 and runs[True][1] == 10, (runs[False][1], runs[True][1])


def test_tracking_in_bf16_runs_the_memory_pass_in_bf16_and_stays_near_fp32(sam21_at_512):
    """``precision`` bf16 reaches the video memory (autocast, as an image's segmentation): memory attention runs in
    bf16, and the masks stay close to fp32's (random weights; the README gives the speed on a native-bf16 CPU)."""
    from grounded_sam.video.identities import mask_iou
    from grounded_sam.video.tracker import track_frames

    frames = torch.stack(clip_frames(3, size=(320, 180)))
    size = (180, 320)
    a, b = [10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0]
    dtypes = []
    hook = sam21_at_512.video.memory_attention.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    try:
        runs = {
            precision: list(track_frames(ScriptedDetector([([a, b], ["bunny"] * 2)], size), sam21_at_512, precision, frames, "bunny",
                                         redetect_every=3, backtrack=0))
            for precision in ("fp32", "bf16")
        }
    finally:
        hook.remove()
    assert dtypes == [torch.float32] * 2 + [torch.bfloat16] * 2, dtypes  # 2 tracked frames (both objects in one batch), each run
    for exact, low in zip(runs["fp32"], runs["bf16"], strict=True):
        assert exact.track_id.tolist() == low.track_id.tolist() == [1, 2]
        assert all(0 < int(m.sum()) < m.numel() for m in low.masks)
        assert float(mask_iou(exact.masks, low.masks).diagonal().min()) > 0.9


def assert_objects_batched_match_one_at_a_time(video, read_frame, frames: list[torch.Tensor], boxes: torch.Tensor) -> None:
    """Six objects, four prompted on frame 0 and two on frame 2: each frame's logits and object scores with the tracked
    objects run in batches (one of four, one of two: memories of one shape batch together) equal, within 1e-4, the
    one-object-at-a-time path's; the masks are neither empty nor full."""
    size = tuple(frames[0].shape[:2])
    batches: list[int] = []
    hook = video.memory_attention.register_forward_hook(lambda module, args, out: batches.append(int(out.shape[1])))
    runs = {}
    try:
        for batched in (False, True):
            video.batch_objects = batched
            batches.clear()
            propagation = Propagation(video, size, read_frame=read_frame)
            propagation.add_boxes(0, [1, 2, 3, 4], boxes[:4])
            steps = []
            for index, frame in enumerate(frames):
                if index == 2:
                    propagation.add_boxes(2, [5, 6], boxes[4:])
                steps.append(propagation.step(index, frame))
            runs[batched] = (steps, list(batches))
    finally:
        video.batch_objects = True
        hook.remove()
    assert set(runs[False][1]) == {1}
    assert 4 in runs[True][1] and 2 in runs[True][1], runs[True][1]  # frame 3 on: the first four together, the last two
    for (ids, logits, scores), (batched_ids, batched_logits, batched_scores) in zip(runs[False][0], runs[True][0], strict=True):
        assert batched_ids == ids
        assert float((batched_logits - logits).abs().max()) <= 1e-4
        assert float((batched_scores - scores).abs().max()) <= 1e-4
    coverage = [float((m > 0).float().mean()) for m in runs[True][0][-1][1]]
    assert len(coverage) == 6 and any(0.05 < c < 0.95 for c in coverage), coverage


SIX_BOXES = torch.tensor([[10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0], [150.0, 100.0, 170.0, 120.0],
                          [100.0, 60.0, 200.0, 120.0], [20.0, 100.0, 120.0, 175.0], [230.0, 90.0, 315.0, 170.0]])


def test_sam21_objects_batched_match_one_at_a_time(sam21_at_512):
    assert_objects_batched_match_one_at_a_time(sam21_at_512.video, None, clip_frames(5, size=(320, 180)), SIX_BOXES)


@pytest.mark.parity  # SAM 3's tracker: its ViT on every frame
def test_sam3_objects_batched_match_one_at_a_time(sam3_release):
    segmenter = load_sam(sam3_release[1], "cpu")
    frames = clip_frames(4, size=(320, 180))
    assert_objects_batched_match_one_at_a_time(segmenter.video, segmenter.video_frame, frames, SIX_BOXES)


@pytest.mark.parity  # SAM 3 end to end: the heavy tier
def test_sam3_in_both_sockets_tracks_with_one_encoding_per_frame(sam3_release):
    """SAM 3 finds the objects and its tracker follows them: each frame's ViT runs once, for detection and
    tracking both; between detections the masks are the tracker's own propagation of the detected boxes."""
    from grounded_sam import load_grounding_dino
    from grounded_sam.prompts import Prompt

    path = sam3_release[1]
    detector, segmenter = load_grounding_dino(path, "cpu"), load_sam(path, "cpu")
    assert segmenter.detector is detector  # one SAM 3 in both sockets
    frames = clip_frames(3, size=(320, 180))
    settings = DetectionSettings(0.0, 0.25, max_detections=2)
    encodings = []
    hook = detector.model.vision_encoder.register_forward_hook(lambda *_: encodings.append(1))
    try:
        detector.clear_caches()
        pipeline = GroundedSam(detector, segmenter, "fp32")
        results = list(pipeline.track(torch.stack(frames), "bunny", settings, redetect_every=2))
    finally:
        hook.remove()
    assert len(encodings) == 3, f"{len(encodings)} ViT passes for 3 frames"
    assert len(results) == 3 and all(len(r) for r in results)
    assert all(set(r.labels) == {"bunny"} for r in results)
    tracks = results[0].track_id.tolist()  # [1, 2], or [1] where the second detection was the first object again
    assert tracks in ([1], [1, 2]), tracks
    first, _ = pipeline.find_kept_and_excluded(frames[0], Prompt.parse("bunny"), settings)  # the boxes the tracker was given
    assert len(first) == 2
    alone = Propagation(segmenter.video, (180, 320), read_frame=segmenter.video_frame)
    alone.add_boxes(0, [1, 2], first.boxes)  # both prompted, as the tracker prompts both before matching
    for index in range(2):  # before the second detection
        expected = alone.full_size(alone.step(index, frames[index])[1])
        found = results[index].track_id.tolist()
        for track in tracks:
            if track in found:
                assert torch.equal(results[index].masks[found.index(track)], expected[track - 1]), (index, track)
            else:  # the tracker lost it on this frame: its propagated mask is empty
                assert not expected[track - 1].any(), (index, track)
        assert 0 < int(expected[0].sum()) < expected[0].numel()


@pytest.mark.parity  # SAM 3's tracker end to end: the heavy tier
def test_sam3_a_duplicate_detection_never_reaches_its_track_s_memory(sam3_release):
    """A detection on frame 1 of the object track 1 follows joins track 1 and is dropped before the frame's
    memories are made: track 1's masks are its propagation alone. Encoded in the same batch, SAM 3's
    non-overlap step lets the duplicate take pixels from track 1's memory, and frame 2 comes out otherwise."""
    from grounded_sam.video.tracker import _mask_boxes

    segmenter = load_sam(sam3_release[1], "cpu")
    frames = clip_frames(3, size=(320, 180))
    size = (180, 320)
    a = torch.tensor([[20.0, 30.0, 200.0, 170.0]])
    alone = Propagation(segmenter.video, size, read_frame=segmenter.video_frame)
    alone.add_boxes(0, [1], a)
    expected = [alone.full_size(alone.step(index, frames[index])[1])[0] for index in range(3)]
    assert all(0.05 < float(m.float().mean()) < 0.95 for m in expected), [float(m.float().mean()) for m in expected]
    again = _mask_boxes(expected[1][None])  # the detector finds track 1's object again on frame 1: its mask's extent

    detector = ScriptedDetector([(a.tolist(), ["bunny"]), (again.tolist(), ["bunny"]), ([], [])], size)
    results = list(GroundedSam(detector, segmenter, "fp32").track(torch.stack(frames), "bunny", redetect_every=1, backtrack=0))
    assert [r.track_id.tolist() for r in results] == [[1], [1], [1]], "the detection on frame 1 did not join track 1"
    for index in range(3):
        assert torch.equal(results[index].masks[0], expected[index]), index

    # the same frame with the duplicate in the memory batch (as the tracker encoded it before): frame 2 differs
    both = Propagation(segmenter.video, size, read_frame=segmenter.video_frame)
    both.add_boxes(0, [1], a)
    both.step(0, frames[0])
    both.add_boxes(1, [-1], again)
    both.step(1, frames[1])
    both.drop([-1])
    with_duplicate = both.full_size(both.step(2, frames[2])[1])[0]
    changed = int((with_duplicate ^ expected[2]).sum())
    assert changed > 0, "the duplicate did not change track 1's memory: this case does not reach the defect"


@pytest.mark.parity  # SAM 2.1 end to end, like the test above
def test_excluded_objects_are_tracked_and_cut_out_of_every_frame(sam21_at_512):
    """"bunny", not "bird": the bird, found on frame 2 only, is followed forwards and backwards, and its
    mask is cut out of the bunny's on every frame, as an image's exclusion cuts; it is never an object."""
    sam21 = sam21_at_512
    frames = clip_frames(4, size=(320, 180))
    size = (180, 320)
    a, e = [10.0, 20.0, 150.0, 170.0], [60.0, 40.0, 220.0, 140.0]
    detector = ScriptedDetector([([a], ["bunny"], [0]), ([e], ["bird"], [1])], size)
    pipeline = GroundedSam(detector, sam21, precision="fp32")
    results = list(pipeline.track(torch.stack(frames), "bunny", exclude="bird", redetect_every=2, backtrack=2))
    assert detector.calls == 2 and len(results) == 4
    assert all(r.track_id.tolist() == [1] and r.labels == ("bunny",) for r in results)
    # what is expected, from SAM 2's own propagation: a from frame 0 and e from frame 2 in one memory pass, and e
    # backwards over 1 and 0
    forward = Propagation(sam21.video, size)
    forward.add_boxes(0, [1], torch.tensor([a]))
    bunny, bird = [], {}
    for index, frame in enumerate(frames):
        if index == 2:
            forward.add_boxes(2, [2], torch.tensor([e]))
        masks = forward.full_size(forward.step(index, frame)[1])
        bunny.append(masks[0])
        if index >= 2:
            bird[index] = masks[1]
    back = Propagation(sam21.video, size, reverse=True)
    back.add_boxes(2, [1], torch.tensor([e]))
    back.step(2, frames[2])
    bird.update({i: back.full_size(back.step(i, frames[i])[1])[0] for i in (1, 0)})
    for index, found in enumerate(results):
        want = bunny[index] & ~bird[index]
        assert (bunny[index] & bird[index]).any() and want.any(), f"frame {index}: a cut must remove pixels and leave some, or it proves little"
        assert torch.equal(found.masks[0], want), index


def test_a_prompt_that_finds_nothing_gives_an_empty_result_per_frame(detector, sam21):
    from grounded_sam import CancelledError, RunHooks

    frames = torch.stack(clip_frames(3, size=(160, 90)))
    progress = []
    hooks = RunHooks(on_progress=lambda done, total: progress.append((done, total)))
    results = list(GroundedSam(detector, sam21, "fp32").track(frames, "bunny", DetectionSettings(box_threshold=1.0), redetect_every=1, hooks=hooks))
    assert [len(r) for r in results] == [0, 0, 0]
    assert all(r.masks.shape == (0, 90, 160) and r.track_id.shape == (0,) for r in results)
    # the bar counts the whole clip: it moves frame by frame to 3 frames of 3
    assert {total for _, total in progress} == {300} and progress[-1][0] == 300
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    # a cancel in the second frame stops the run; the first frame's result was already handed over
    asked = []
    stop = RunHooks(check_cancel=lambda: asked.append(1) or len(asked) > 3)
    got = []
    with pytest.raises(CancelledError):
        for found in GroundedSam(detector, sam21, "fp32").track(frames, "bunny", DetectionSettings(box_threshold=1.0), redetect_every=1,
                                                                backtrack=0, hooks=stop):
            got.append(found)
    assert len(got) >= 1


# --- stops: a cancel, an error, progress -------------------------------------------------------


def test_a_detection_frame_reports_progress_and_stops_on_a_cancel_while_detecting(detector, sam21):
    """The detector runs inside the frame's steps: the bar moves and a cancel stops the run during detection,
    before the segmenter runs at all (it once ran outside them, deaf to a cancel for the whole detection)."""
    from grounded_sam import CancelledError, RunHooks

    frames = torch.stack(clip_frames(2, size=(160, 90)))
    detector.clear_caches()  # another test's run of these frames would be a cache hit: no detector layer would run
    detecting, seen = [False], {"progress": 0, "cancel": 0}
    before = detector.model.register_forward_pre_hook(lambda *_: detecting.__setitem__(0, True))
    after = detector.model.register_forward_hook(lambda *_: detecting.__setitem__(0, False))
    segmenting = []
    encoder = sam21.module().register_forward_pre_hook(lambda *_: segmenting.append(1))

    def asked() -> bool:
        seen["cancel"] += detecting[0]
        return seen["cancel"] > 2  # stop a few layers into the detector

    hooks = RunHooks(on_progress=lambda done, total: seen.__setitem__("progress", seen["progress"] + detecting[0]), check_cancel=asked)
    try:
        with pytest.raises(CancelledError, match="frame 1 of 2"):
            list(GroundedSam(detector, sam21, "fp32").track(frames, "bunny", redetect_every=1, hooks=hooks))
    finally:
        before.remove(), after.remove(), encoder.remove()
    assert seen["cancel"] == 3 and seen["progress"] > 0, seen
    assert detecting[0] and not segmenting, "the cancel came after the detector had finished"


@pytest.mark.parity  # SAM 2.1 end to end: the heavy tier
def test_a_backward_pass_moves_the_bar_forward_stops_on_a_cancel_and_keeps_the_frames_done(sam21_at_512):
    """b, first found on frame 2, is followed back over frames 1 and 0 as a stage of frame 2: the bar
    never goes back (it once restarted frame 2 for every earlier frame) and its total stays the clip's; a
    cancel in the backward pass stops it there, and frames 0 and 1, already segmented, are handed out first."""
    from grounded_sam import CancelledError, RunHooks

    frames = torch.stack(clip_frames(4, size=(320, 180)))
    size = (180, 320)
    a, b = [10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0]
    script = [([a], ["bunny"]), ([b], ["bird"])]
    progress = []
    hooks = RunHooks(on_progress=lambda done, total: progress.append((done, total)))
    results = list(GroundedSam(ScriptedDetector(script, size), sam21_at_512, "fp32").track(frames, "bunny . bird", redetect_every=2,
                                                                                          backtrack=2, hooks=hooks))
    assert all(2 in r.track_id.tolist() for r in results), "no backward pass"
    done = [d for d, _ in progress]
    assert done == sorted(done) and {t for _, t in progress} == {400} and done[-1] == 400
    assert any(250 < d < 300 for d in done), "the backward pass (the second half of frame 2) reported nothing"

    progress.clear()
    stop = RunHooks(on_progress=lambda done, total: progress.append((done, total)),
                    check_cancel=lambda: bool(progress) and progress[-1][0] > 260)
    got = []
    with pytest.raises(CancelledError, match="frame 3 of 4"):
        for found in GroundedSam(ScriptedDetector(script, size), sam21_at_512, "fp32").track(frames, "bunny . bird", redetect_every=2,
                                                                                            backtrack=2, hooks=stop):
            got.append(found)
    assert 260 < progress[-1][0] < 300, "the cancel did not stop the backward pass"
    assert len(got) == 2 and all(1 in r.track_id.tolist() for r in got), "frames segmented before the cancel were lost"
    assert [torch.equal(g.masks[g.track_id.tolist().index(1)], r.masks[r.track_id.tolist().index(1)]) for g, r in zip(got, results[:2], strict=True)] == [True, True]


def test_an_error_mid_clip_hands_out_every_frame_segmented_before_it(sam21_at_512):
    """Frame 3 is the wrong size: the error goes on, but only after frames 0-2 (held for a backward pass) are out."""
    frames = clip_frames(3, size=(160, 90)) + [torch.zeros((90, 150, 3), dtype=torch.uint8)]
    detector = ScriptedDetector([([[10.0, 10.0, 80.0, 70.0]], ["bunny"])], (90, 160))
    got = []
    with pytest.raises(InputError, match="frame 3 of the frames is 150x90"):
        for found in GroundedSam(detector, sam21_at_512, "fp32").track(frames, "bunny", redetect_every=4, backtrack=4):
            got.append(found)
    assert len(got) == 3 and all(r.track_id.tolist() == [1] for r in got), [r.track_id.tolist() for r in got]


@pytest.mark.parity  # SAM 2.1 end to end: the heavy tier
def test_a_track_keeps_the_label_that_found_it_and_lists_the_others(sam21_at_512):
    """Frame 0 finds the bunny, frame 1 finds the same object as "rabbit": it stays "bunny", its score is the
    latest detection's, and ``labels_seen`` lists both, the first first (it once became "rabbit")."""
    frames = torch.stack(clip_frames(3, size=(320, 180)))
    size = (180, 320)
    a = [100.0, 0.0, 320.0, 180.0]  # (a box whose fresh mask overlaps the track's propagated one, with these random weights)
    detector = ScriptedDetector([([a], ["bunny"]), ([a], ["rabbit"]), ([a], ["bunny"])], size)
    # (backtrack 0: each frame is handed out as it is segmented, with the labels seen so far)
    results = list(GroundedSam(detector, sam21_at_512, "fp32").track(frames, "bunny . rabbit", redetect_every=1, backtrack=0))
    assert [r.track_id.tolist() for r in results] == [[1], [1], [1]], "the second detection did not join track 1: nothing to check"
    assert [r.labels for r in results] == [("bunny",), ("bunny",), ("bunny",)]
    assert [r.labels_seen for r in results] == [("bunny",), ("bunny . rabbit",), ("bunny . rabbit",)]
    assert results[1].to_json()[0]["labels_seen"] == ["bunny", "rabbit"]
    assert all(float(r.scores[0]) == pytest.approx(0.9) for r in results)  # one box a frame: the scripted score


# --- bad input, caught before any model runs ------------------------------------------------


def test_bad_clips_and_settings_say_what_to_do(detector, sam21, segmenter, tmp_path):
    pipeline = GroundedSam(detector, sam21, "fp32")
    with pytest.raises(InputError, match="empty"):
        list(pipeline.track(torch.zeros((0, 8, 8, 3)), "bunny"))
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="not a video"):
        list(pipeline.track(bad, "bunny"))
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (32, 24)).save(folder / "000.png")
    Image.new("RGB", (30, 24)).save(folder / "001.png")
    with pytest.raises(InputError, match=r"001\.png .* same size"):
        list(open_frames(folder))
    with pytest.raises(InputError, match="redetect_every"):
        list(pipeline.track(torch.zeros((2, 8, 8, 3)), "bunny", redetect_every=0))
    with pytest.raises(InputError, match="SAM 2, 2.1, EdgeTAM or SAM 3"):
        list(GroundedSam(detector, segmenter, "fp32").track(torch.zeros((2, 8, 8, 3)), "bunny"))
    with pytest.raises(InputError, match="prompt"):
        list(pipeline.track(torch.zeros((2, 8, 8, 3)), " . "))


# --- the command line ----------------------------------------------------------------------


def write_clip(path: Path, frames: list[torch.Tensor]) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv444p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.numpy(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parity  # both models end to end: the heavy tier
def test_cli_track_writes_tracks_mot_masks_and_preview(dino_checkpoint, sam2_video_folder_512, tmp_path):
    """The real (random-weight) Grounding DINO and SAM 2.1 tiny through ``grounded-sam track`` on 12 frames of the
    clip, the hub's folder layout in ``--sam`` (at 512: what is checked is what the command writes)."""
    import av

    from grounded_sam.cli import main

    count = 12
    clip = write_clip(tmp_path / "clip.mkv", clip_frames(count, size=(160, 96)))
    out = tmp_path / "out"
    code = main(["track", str(clip), "--prompt", "bunny . tree", "--out", str(out), "--dino", str(dino_checkpoint),
                 "--sam", str(sam2_video_folder_512), "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0",
                 "--max-detections", "2", "--redetect-every", "4", "--masks", "png", "--preview", "--no-progress"])
    assert code == 0
    tracks = json.loads((out / "tracks.json").read_text())
    assert [entry["frame"] for entry in tracks] == list(range(count))
    rows = [row for entry in tracks for row in entry["objects"]]
    assert rows and all(set(row) == {"track_id", "label", "score", "box_xyxy", "mask_area", "labels_seen"} for row in rows)
    assert all(row["labels_seen"][0] == row["label"] for row in rows)  # the label that found the track comes first
    ids = sorted({row["track_id"] for row in rows})
    assert ids == list(range(1, len(ids) + 1)), ids  # ids count up from 1, none skipped
    mot = (out / "tracks.mot.txt").read_text().splitlines()
    assert len(mot) == len(rows)
    assert [line.split(",")[:2] for line in mot] == [[str(entry["frame"] + 1), str(row["track_id"])] for entry in tracks for row in entry["objects"]]
    assert len(mot[0].split(",")) == 10 and mot[0].split(",")[-3:] == ["-1", "-1", "-1"]
    drawn = 0
    for entry in tracks:  # the id map: each object's id on its mask's pixels, the higher id on top where masks overlap
        id_map = np.asarray(Image.open(out / "masks" / f"{entry['frame']:06d}.png"))
        assert id_map.shape == (96, 160)
        objects = sorted(entry["objects"], key=lambda row: row["track_id"])
        assert set(np.unique(id_map).tolist()) - {0} <= {row["track_id"] for row in objects}
        for row in objects:
            assert int((id_map == row["track_id"]).sum()) <= row["mask_area"]
        if objects:
            top = objects[-1]
            assert int((id_map == top["track_id"]).sum()) == top["mask_area"] > 0  # nothing covers the highest id
            drawn += int((id_map > 0).sum())
    assert drawn > 0, "every id map is empty: a trivial check"
    with av.open(str(out / "preview.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == count


@pytest.mark.parity  # both models end to end: the heavy tier
def test_cli_track_stopped_by_a_bad_frame_writes_the_frames_before_it_and_exits_3(dino_checkpoint, sam2_video_folder_512, tmp_path, capsys):
    """Frame 3 of a folder is another size: frames 0-2 (held for a backward pass when it came) are written,
    tracks.json ends with where and why it stopped, and the exit status is 3, not 2 ("nothing ran")."""
    from grounded_sam.cli import EXIT_STOPPED_PARTWAY, main

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(clip_frames(3, size=(160, 96))):
        Image.fromarray(frame.numpy()).save(folder / f"{index:03d}.png")
    Image.new("RGB", (150, 96)).save(folder / "003.png")
    out = tmp_path / "out"
    code = main(["track", str(folder), "--prompt", "bunny", "--out", str(out), "--dino", str(dino_checkpoint),
                 "--sam", str(sam2_video_folder_512), "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0",
                 "--max-detections", "1", "--redetect-every", "4", "--masks", "png", "--no-progress"])
    assert code == EXIT_STOPPED_PARTWAY == 3
    tracks = json.loads((out / "tracks.json").read_text())
    assert [entry["frame"] for entry in tracks[:-1]] == [0, 1, 2]
    stop = tracks[-1]["stopped"]
    assert stop["frames_tracked"] == 3 and stop["next_frame"] == 3 and "003.png" in stop["reason"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert len((out / "tracks.mot.txt").read_text().splitlines()) == sum(len(entry["objects"]) for entry in tracks[:-1])
    err = capsys.readouterr().err
    assert "003.png" in err and "3 frame(s) tracked before it" in err


def test_cli_track_refuses_a_bad_clip_before_loading_models(tmp_path, capsys):
    from grounded_sam.cli import main

    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"junk")
    code = main(["track", str(bad), "--prompt", "bunny", "--out", str(tmp_path / "out"), "--dino", "nowhere.pth", "--sam", "nowhere.pt"])
    assert code == 2
    assert "not a video" in capsys.readouterr().err


def test_a_video_reads_from_bytes_and_within_its_trim_window(tmp_path):
    """What ComfyUI's VIDEO hands over: a file or its bytes, and a (start, duration) trim in seconds."""
    import io

    from grounded_sam.video.frames import open_video

    frames = clip_frames(5, size=(64, 36))
    path = write_clip(tmp_path / "clip.mkv", frames)  # 25 frames a second, lossless
    whole = list(open_frames(path))
    assert len(whole) == 5 and whole[0].shape == (36, 64, 3)
    from_bytes = list(open_frames(io.BytesIO(path.read_bytes())))
    assert all(torch.equal(a, b) for a, b in zip(whole, from_bytes, strict=True))
    trimmed = list(open_video(path, "clip", window=(0.04, 0.08)))  # frames 1 and 2
    assert len(trimmed) == 2 and torch.equal(trimmed[0], whole[1]) and torch.equal(trimmed[1], whole[2])


def test_a_video_file_object_already_read_is_read_from_its_start(tmp_path):
    """ComfyUI 0.33's VIDEO can hand over a BytesIO that was read for its frame count first: rewound, not read from where that left it."""
    import io

    frames = clip_frames(3, size=(64, 36))
    path = write_clip(tmp_path / "clip.mkv", frames)
    source = io.BytesIO(path.read_bytes())
    source.read(1000)  # as a frame count or a probe leaves it
    read = list(open_frames(source))
    assert len(read) == 3 and all(torch.equal(a, b) for a, b in zip(read, open_frames(path), strict=True))
    again = list(open_frames(source))  # read twice: both times the whole clip
    assert len(again) == 3 and torch.equal(again[-1], read[-1])


def test_the_mask_video_keeps_ids_past_255_losslessly(tmp_path):
    """``--masks video`` writes 16-bit ids: track 257 is 257, not 1, and the frames read back equal the PNG id maps."""
    import av

    from grounded_sam.video.writer import TrackWriter, id_map

    size = (24, 40)
    frames = []
    with TrackWriter(tmp_path, masks="video") as writer:
        for index, ids in enumerate([[1, 257], [300, 65535]]):
            masks = torch.zeros((2, *size), dtype=torch.bool)
            masks[0, 2:10, 3 + index : 15] = True
            masks[1, 12:20, 20:38 - index] = True
            found = Detections(boxes=torch.zeros((2, 4)), scores=torch.ones(2), labels=("a", "b"), frame_index=torch.zeros(2, dtype=torch.int64),
                               image_size=size, num_frames=1, masks=masks, track_id=torch.tensor(ids))
            frames.append(id_map(found))
            writer.add(index, None, found)
    with av.open(str(tmp_path / "masks.mkv")) as container:
        read = [frame.to_ndarray(format="gray16le") for frame in container.decode(video=0)]
    assert len(read) == 2
    for written, back in zip(frames, read, strict=True):
        assert back.dtype == np.uint16 and np.array_equal(written, back)
    assert set(np.unique(read[0]).tolist()) == {0, 1, 257} and set(np.unique(read[1]).tolist()) == {0, 300, 65535}
    too_many = Detections(boxes=torch.zeros((1, 4)), scores=torch.ones(1), labels=("a",), frame_index=torch.zeros(1, dtype=torch.int64),
                          image_size=size, num_frames=1, masks=torch.ones((1, *size), dtype=torch.bool), track_id=torch.tensor([65536]))
    with pytest.raises(InputError, match="16-bit id map"):
        id_map(too_many)
