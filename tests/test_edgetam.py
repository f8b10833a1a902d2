"""EdgeTAM: Meta's release format through our loader, against Meta's own EdgeTAM code on the same random weights.

Meta's EdgeTAM code (``facebookresearch/EdgeTAM``) is the reference: PyPI's ``edgetam-dimos`` 1.0.1 ships its
files (one change: hole filling may use OpenCV on a CPU, turned off on both sides here), installed by the test
setup into a folder of its own, or a checkout named by ``GROUNDED_SAM_EDGETAM_SOURCE``. Its package is named
``sam2`` too, so it runs in a process of its own (``edgetam_reference.py``). Without it these tests skip,
saying what to set; EdgeTAM's loading and tracking are tested without it too (``test_edgetam_folder_*``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_sam_parity import assert_same_masks, boxes_for
from test_tracking import clip_frames

from grounded_sam import load_sam
from grounded_sam.sam.sam2_segmenter import Sam2Segmenter
from grounded_sam.video.propagation import MEMORY_FRAMES, Propagation

pytestmark = pytest.mark.parity

HERE = Path(__file__).resolve().parent
SHARED_IMAGE = HERE.parents[1] / "shared" / "images" / "bus.jpg"
# frames of the clip, and the frame a second object is added on (past the memory window by the end)
COUNT, ADDED = 24, 5
A, B = [10.0, 20.0, 150.0, 170.0], [200.0, 10.0, 310.0, 90.0]


# where a session of this project's machines keeps fetched repositories (a bare git directory, no work tree)
MIRROR = Path("/work/.mirror/facebookresearch+EdgeTAM/repo")


def edgetam_source(scratch: Path) -> Path | None:
    """A folder holding Meta's ``sam2/`` package of EdgeTAM: the variable's, the one the test setup installs
    (``scripts/install-test-deps.sh``: PyPI's edgetam-dimos, Meta's files), or one read out of the mirror's git."""
    for given in (os.environ.get("GROUNDED_SAM_EDGETAM_SOURCE"), str(Path(sys.prefix) / "edgetam-reference")):
        if given and (Path(given) / "sam2" / "configs" / "edgetam.yaml").is_file():
            return Path(given)
    if (MIRROR / "HEAD").is_file():
        archive = subprocess.run(["git", "--git-dir", str(MIRROR), "archive", "HEAD", "sam2"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        return scratch
    return None


@pytest.fixture(scope="module")
def meta_edgetam(tmp_path_factory, bus):
    """(our edgetam.pt, Meta's outputs, the frames): Meta's code builds the random model and runs it."""
    source = edgetam_source(tmp_path_factory.mktemp("edgetam-source"))
    if source is None:
        pytest.skip("Meta's EdgeTAM source is not here: set GROUNDED_SAM_EDGETAM_SOURCE to a checkout of facebookresearch/EdgeTAM")
    pytest.importorskip("hydra", reason="Meta's EdgeTAM builds its model with hydra (installed with the sam2 reference)")
    work = tmp_path_factory.mktemp("edgetam")
    frames = clip_frames(COUNT, work / "frames", size=(320, 180))
    plan = {
        "seed": 4,
        "object_score_bias": 8.0,
        "image": str(SHARED_IMAGE),
        "image_boxes": boxes_for(bus).tolist(),
        "frames": str(work / "frames"),
        "video_sessions": [{"start": 0, "boxes": {"1": A}}, {"start": ADDED, "boxes": {"2": B}}],
    }
    (work / "plan.json").write_text(json.dumps(plan))
    subprocess.run([sys.executable, str(HERE / "edgetam_reference.py"), str(source), str(work)], check=True)
    return work / "edgetam.pt", torch.load(work / "reference.pt"), frames


def test_release_file_segments_as_meta_s_image_predictor(meta_edgetam, bus):
    path, reference, _ = meta_edgetam
    ours = load_sam(path, "cpu")
    assert isinstance(ours, Sam2Segmenter) and ours.name == "EdgeTAM" and ours.video is not None
    assert_same_masks(ours.masks_for_boxes(ours.embed(bus), boxes_for(bus)), reference["image_masks"])


def test_propagation_with_an_object_added_later_matches_meta(meta_edgetam):
    """24 frames (past ``MEMORY_FRAMES``: pruned memories), object 1 from frame 0, object 2 added on frame 5 into
    the running session (Meta's EdgeTAM predictor takes no object once tracking started: its object 2 runs
    in a session of its own from frame 5, the same maths, as each object's memory is its own)."""
    path, reference, frames = meta_edgetam
    assert COUNT > MEMORY_FRAMES + 1 + ADDED
    video = load_sam(path, "cpu").video
    ours = Propagation(video, (180, 320))
    ours.add_boxes(0, [1], torch.tensor([A]))
    worst_iou, worst_logit = 1.0, 0.0
    for index, frame in enumerate(frames):
        if index == ADDED:
            ours.add_boxes(ADDED, [2], torch.tensor([B]))
        ids, low_res, _ = ours.step(index, frame)
        want = reference["video_logits"][index]
        assert ids == sorted(want), (index, ids, sorted(want))
        logits = torch.nn.functional.interpolate(low_res.unsqueeze(1), (180, 320), mode="bilinear", align_corners=False)[:, 0]
        ref = torch.stack([want[i] for i in ids])
        cover = (ref > 0).float().mean((1, 2))
        assert ((cover > 0.05) & (cover < 0.95)).all(), f"frame {index}: reference masks cover {cover.tolist()}: trivial"
        masks, ref_masks = logits > 0, ref > 0
        worst_iou = min(worst_iou, float(((masks & ref_masks).sum((1, 2)) / (masks | ref_masks).sum((1, 2))).min()))
        worst_logit = max(worst_logit, float((logits - ref).abs().max()))
    outputs = ours.session.output_dict_per_obj[ours.session._obj_id_to_idx[1]]
    assert min(outputs["non_cond_frame_outputs"]) == COUNT - 1 - MEMORY_FRAMES  # the window was pruned
    print(f"EdgeTAM vs Meta, {COUNT} frames, object 2 added on {ADDED}: min IoU {worst_iou:.6f}, max |logit diff| {worst_logit:.2e}")
    assert worst_iou >= 0.999, worst_iou
    assert worst_logit < 1e-3, worst_logit


# --- without Meta's code: the hub's folder layout, loaded, segmenting and tracking -----------------------


@pytest.fixture(scope="module")
def edgetam_folder(tmp_path_factory) -> Path:
    from reference_models import save_edgetam_video_folder

    return save_edgetam_video_folder(tmp_path_factory.mktemp("edgetam-folder") / "EdgeTAM")


def test_edgetam_folder_loads_segments_and_tracks(edgetam_folder, bus):
    """``facebook/EdgeTAM``'s layout: one video model whose image path segments boxes; ``track`` follows them."""
    from test_tracking import ScriptedDetector

    from grounded_sam import GroundedSam

    ours = load_sam(edgetam_folder, "cpu")
    assert isinstance(ours, Sam2Segmenter) and ours.name == "EdgeTAM" and ours.video is not None
    assert next(ours.model.parameters()).data_ptr() == next(ours.video.parameters()).data_ptr()  # shared, not copied
    masks = ours.masks_for_boxes(ours.embed(bus), boxes_for(bus))
    assert all(0 < int(m.sum()) < m.numel() for m in masks)

    frames = clip_frames(4, size=(320, 180))
    detector = ScriptedDetector([([A], ["bunny"]), ([A, B], ["bunny", "bird"])], (180, 320))
    results = list(GroundedSam(detector, ours, "fp32").track(torch.stack(frames), "bunny . bird", redetect_every=2, backtrack=2))
    alone = Propagation(ours.video, (180, 320))
    alone.add_boxes(0, [1], torch.tensor([A]))
    for index in range(2):  # track 1 between detections is EdgeTAM's own propagation of box A
        expected = alone.full_size(alone.step(index, frames[index])[1])[0]
        found = results[index]
        assert torch.equal(found.masks[found.track_id.tolist().index(1)], expected)
        assert 0 < int(expected.sum()) < expected.numel()
    assert all(2 in r.track_id.tolist() for r in results), [r.track_id.tolist() for r in results]  # B, followed back too


def test_edgetam_objects_batched_match_one_at_a_time(edgetam_folder):
    from test_tracking import SIX_BOXES, assert_objects_batched_match_one_at_a_time

    video = load_sam(edgetam_folder, "cpu").video
    assert_objects_batched_match_one_at_a_time(video, None, clip_frames(5, size=(320, 180)), SIX_BOXES)
