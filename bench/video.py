"""Video rows, each a ratio in one process on identical random weights and the shared clip (1280x720):

- SAM 2.1 tiny propagation, ours (transformers' Sam2VideoModel, streamed) against Meta's
  ``SAM2VideoPredictor`` (``init_state`` on the frames as JPEG, two box prompts, ``propagate_in_video``);
- tracking at ``redetect_every=10`` against segmenting every frame on its own (the image pipeline),
  with a full-size Grounding DINO Swin-T + BERT-base and SAM 2.1 tiny, exactly ``--track-objects`` objects;
- the same with EdgeTAM in place of SAM 2.1 tiny (the hub's ``edgetam_video`` layout, random weights);
- full-size SAM 3's tracker, ours against Meta's ``Sam3TrackerPredictor`` (two box prompts on frame 0).

    python bench/video.py [--frames 8] [--objects 2] [--track-frames 20] [--track-objects 3] [--edgetam-frames 10] [--sam3-frames 4]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from reference_models import (  # noqa: E402
    bert_folder,
    meta_sam2,
    original_grounding_dino,
    save_edgetam_video_folder,
    save_original_release,
    save_sam2_release,
)

from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam  # noqa: E402
from grounded_sam.video.frames import open_frames  # noqa: E402
from grounded_sam.video.propagation import Propagation  # noqa: E402

CLIP = ROOT.parent / "shared" / "videos" / "bigbuckbunny.mp4"
BOXES = torch.tensor([[300.0, 100.0, 900.0, 600.0], [50.0, 300.0, 400.0, 700.0], [700.0, 50.0, 1200.0, 400.0], [900.0, 350.0, 1250.0, 700.0]])


def first_frames(count: int) -> list[torch.Tensor]:
    frames = []
    for index, frame in enumerate(open_frames(CLIP)):
        if index == count:
            break
        frames.append(frame)
    return frames


def propagation_row(work: Path, sam_path: Path, count: int, objects: int = 2) -> dict:
    from sam2.build_sam import build_sam2_video_predictor

    folder = work / "jpeg"
    folder.mkdir()
    for index, frame in enumerate(first_frames(count)):
        Image.fromarray(frame.numpy()).save(folder / f"{index:05d}.jpg", quality=95)
    frames = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()) for p in sorted(folder.glob("*.jpg"))]
    predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(sam_path), device="cpu")
    started = time.perf_counter()
    state = predictor.init_state(str(folder))
    for obj_id, box in enumerate(BOXES[:objects], start=1):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box.numpy())
    for _ in predictor.propagate_in_video(state):
        pass
    meta = time.perf_counter() - started
    segmenter = load_sam(sam_path, "cpu")
    started = time.perf_counter()
    ours = Propagation(segmenter.video, tuple(frames[0].shape[:2]))
    ours.add_boxes(0, list(range(1, objects + 1)), BOXES[:objects])
    for index, frame in enumerate(frames):
        ours.full_size(ours.step(index, frame)[1])
    mine = time.perf_counter() - started
    return {"row": f"SAM 2.1 tiny propagation, {count} frames, {objects} objects", "reference_s": round(meta, 1), "ours_s": round(mine, 1),
            "frames_per_s": round(count / mine, 3), "ratio": round(meta / mine, 2)}


def sam3_propagation_row(work: Path, count: int) -> dict:
    """Full-size SAM 3 (Meta's release layout: 32 ViT layers, 4 memory-attention layers) in the SAM socket, two box
    prompts on frame 0: ours (transformers' ``Sam3TrackerVideoModel`` with Meta's two steps, frames streamed)
    against Meta's ``Sam3TrackerPredictor`` (``init_state``, ``propagate_in_video``) on the same weights and frames.

    Meta's predictor is given the frames' pixels as our detector prepares them (as in the parity test); that
    preparation is counted in its time, as ours is in ours. Its CUDA calls are made no-ops on a CPU.
    """
    from unittest import mock

    from reference_models import meta_sam3, meta_sam3_on_cpu, save_sam3_release

    frames = first_frames(count)
    model = meta_sam3(depth=32, global_blocks=(7, 15, 23, 31), text_layers=24, interactive=True, seed=9, memory_layers=4, fusion_layers=6)
    path = save_sam3_release(model, work / "sam3.pt")
    segmenter = load_sam(path, "cpu")
    h, w = frames[0].shape[:2]

    def meta() -> dict[int, torch.Tensor]:
        tracker = model.inst_interactive_predictor.model
        tracker.backbone = model.backbone
        try:
            with meta_sam3_on_cpu(), mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self), torch.inference_mode():
                state = tracker.init_state(video_height=h, video_width=w, num_frames=count, offload_state_to_cpu=True)
                state["images"] = torch.cat([segmenter.detector.preprocess(frame) for frame in frames])
                for obj_id, box in enumerate(BOXES, start=1):
                    tracker.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box / torch.tensor([w, h, w, h]))
                run = tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=count - 1, reverse=False, propagate_preflight=True)
                return {index: low[:, 0].clone() for index, _, low, _, _ in run}
        finally:
            tracker.backbone = None

    def ours() -> dict[int, torch.Tensor]:
        propagation = Propagation(segmenter.video, (h, w), read_frame=segmenter.video_frame)
        propagation.add_boxes(0, [1, 2], BOXES)
        low_res = {}
        for index, frame in enumerate(frames):
            low_res[index] = propagation.step(index, frame)[1]
            propagation.full_size(low_res[index])  # the masks at the frame's size, as tracking makes them
        return low_res

    started = time.perf_counter()
    theirs = meta()
    meta_s = time.perf_counter() - started
    started = time.perf_counter()
    mine = ours()
    ours_s = time.perf_counter() - started
    masks = {i: (mine[i] > 0, theirs[i] > 0) for i in range(count)}  # low-res masks, per frame [objects, 288, 288]
    union = {i: (a | b).flatten(1).sum(1) for i, (a, b) in masks.items()}
    ious = [float(((a & b).flatten(1).sum(1)[union[i] > 0] / union[i][union[i] > 0]).min()) for i, (a, b) in masks.items() if (union[i] > 0).any()]
    return {"row": f"SAM 3 tracker propagation (full size), {count} frames, 2 objects", "reference_s": round(meta_s, 1),
            "ours_s": round(ours_s, 1), "frames_per_s": round(count / ours_s, 3), "ratio": round(meta_s / ours_s, 2),
            "max_abs_logit_diff": float(max((mine[i] - theirs[i]).abs().max() for i in range(count))),
            "mask_iou_min_where_not_empty": round(min(ious), 5) if ious else None,
            "mask_cover": [round(float(masks[i][0].float().mean()), 3) for i in range(count)]}  # fmt: skip


def tracking_row(work: Path, sam_path: Path, count: int, sam_name: str = "SAM 2.1 tiny", objects: int = 3) -> dict:
    dino_path = work / "groundingdino_swint_ogc.pth"
    if not dino_path.is_file():
        bert = bert_folder(work / "bert", hidden=768, layers=12, intermediate=3072)
        save_original_release(original_grounding_dino(bert, enc=6, dec=6), dino_path)
    pipeline = GroundedSam(load_grounding_dino(dino_path, "cpu"), load_sam(sam_path, "cpu"), "fp32")
    frames = torch.stack(first_frames(count))
    settings = DetectionSettings(box_threshold=0.0, text_threshold=0.0, max_detections=objects)  # exactly k: threshold 0 finds more
    started = time.perf_counter()
    for index in range(count):
        pipeline.segmenter.clear_caches()
        pipeline.segment(frames[index : index + 1], "bunny . tree", settings)
    per_frame = time.perf_counter() - started
    started = time.perf_counter()
    tracked = list(pipeline.track(frames, "bunny . tree", settings, redetect_every=10))
    tracking = time.perf_counter() - started
    return {"row": f"{sam_name} tracking (redetect_every=10) vs every frame segmented, {count} frames, {objects} objects, fp32",
            "reference_s": round(per_frame, 1), "ours_s": round(tracking, 1), "ratio": round(per_frame / tracking, 2),
            "objects_per_frame": [len(r) for r in tracked]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--track-frames", type=int, default=20)
    parser.add_argument("--sam3-frames", type=int, default=4, help="frames of the SAM 3 tracker row (0: skip it; a full-size frame takes about a minute)")
    parser.add_argument("--edgetam-frames", type=int, default=10, help="frames of the EdgeTAM tracking row (0: skip it)")
    parser.add_argument("--objects", type=int, default=2, help="objects of the propagation row (1 to 4 boxes)")
    parser.add_argument("--track-objects", type=int, default=3, help="objects of the tracking rows (exactly this many boxes kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "video.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="grounded-sam-video-bench-"))
    atexit.register(shutil.rmtree, work, True)
    sam_path = save_sam2_release(meta_sam2("2.1-tiny", seed=3), work / "sam2.1_hiera_tiny.pt")
    if not 1 <= args.objects <= len(BOXES):
        parser.error(f"--objects takes 1 to {len(BOXES)}")
    rows = [propagation_row(work, sam_path, args.frames, args.objects)] if args.frames else []  # --frames 0: the tracking row alone
    if args.track_frames:
        rows.append(tracking_row(work, sam_path, args.track_frames, objects=args.track_objects))
    if args.edgetam_frames:  # the same detector; EdgeTAM as the hub's edgetam_video folder, random weights
        folder = save_edgetam_video_folder(work / "EdgeTAM")
        rows.append(tracking_row(work, folder, args.edgetam_frames, sam_name="EdgeTAM", objects=args.track_objects))
    if args.sam3_frames:
        rows.append(sam3_propagation_row(work, args.sam3_frames))
    for row in rows:
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
