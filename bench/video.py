"""Video rows, each a ratio in one process on identical random weights and the shared clip (1280x720):

- SAM 2.1 tiny propagation, ours (transformers' Sam2VideoModel, streamed) against Meta's
  ``SAM2VideoPredictor`` (``init_state`` on the frames as JPEG, two box prompts, ``propagate_in_video``);
- tracking at ``redetect_every=10`` against segmenting every frame on its own (the image pipeline),
  with a full-size Grounding DINO Swin-T + BERT-base and SAM 2.1 tiny, up to 3 objects.

    python bench/video.py [--frames 8] [--track-frames 20]
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

from reference_models import bert_folder, meta_sam2, original_grounding_dino, save_original_release, save_sam2_release  # noqa: E402

from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam  # noqa: E402
from grounded_sam.video.frames import open_frames  # noqa: E402
from grounded_sam.video.propagation import Propagation  # noqa: E402

CLIP = ROOT.parent / "shared" / "videos" / "bigbuckbunny.mp4"
BOXES = torch.tensor([[300.0, 100.0, 900.0, 600.0], [50.0, 300.0, 400.0, 700.0]])


def first_frames(count: int) -> list[torch.Tensor]:
    frames = []
    for index, frame in enumerate(open_frames(CLIP)):
        if index == count:
            break
        frames.append(frame)
    return frames


def propagation_row(work: Path, sam_path: Path, count: int) -> dict:
    from sam2.build_sam import build_sam2_video_predictor

    folder = work / "jpeg"
    folder.mkdir()
    for index, frame in enumerate(first_frames(count)):
        Image.fromarray(frame.numpy()).save(folder / f"{index:05d}.jpg", quality=95)
    frames = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()) for p in sorted(folder.glob("*.jpg"))]
    predictor = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(sam_path), device="cpu")
    started = time.perf_counter()
    state = predictor.init_state(str(folder))
    for obj_id, box in enumerate(BOXES, start=1):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box.numpy())
    for _ in predictor.propagate_in_video(state):
        pass
    meta = time.perf_counter() - started
    segmenter = load_sam(sam_path, "cpu")
    started = time.perf_counter()
    ours = Propagation(segmenter.video, tuple(frames[0].shape[:2]))
    ours.add_boxes(0, [1, 2], BOXES)
    for index, frame in enumerate(frames):
        ours.full_size(ours.step(index, frame)[1])
    mine = time.perf_counter() - started
    return {"row": f"SAM 2.1 tiny propagation, {count} frames, 2 objects", "reference_s": round(meta, 1), "ours_s": round(mine, 1),
            "frames_per_s": round(count / mine, 3), "ratio": round(meta / mine, 2)}


def tracking_row(work: Path, sam_path: Path, count: int) -> dict:
    bert = bert_folder(work / "bert", hidden=768, layers=12, intermediate=3072)
    dino_path = save_original_release(original_grounding_dino(bert, enc=6, dec=6), work / "groundingdino_swint_ogc.pth")
    pipeline = GroundedSam(load_grounding_dino(dino_path, "cpu"), load_sam(sam_path, "cpu"), "fp32")
    frames = torch.stack(first_frames(count))
    settings = DetectionSettings(box_threshold=0.0, text_threshold=0.0, max_detections=3)
    started = time.perf_counter()
    for index in range(count):
        pipeline.segmenter.clear_caches()
        pipeline.segment(frames[index : index + 1], "bunny . tree", settings)
    per_frame = time.perf_counter() - started
    started = time.perf_counter()
    tracked = list(pipeline.track(frames, "bunny . tree", settings, redetect_every=10))
    tracking = time.perf_counter() - started
    return {"row": f"tracking (redetect_every=10) vs every frame segmented, {count} frames, up to 3 objects",
            "reference_s": round(per_frame, 1), "ours_s": round(tracking, 1), "ratio": round(per_frame / tracking, 2),
            "objects_per_frame": [len(r) for r in tracked]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--track-frames", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "video.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="grounded-sam-video-bench-"))
    atexit.register(shutil.rmtree, work, True)
    sam_path = save_sam2_release(meta_sam2("2.1-tiny", seed=3), work / "sam2.1_hiera_tiny.pt")
    rows = [propagation_row(work, sam_path, args.frames)] if args.frames else []  # --frames 0: the tracking row alone
    if args.track_frames:
        rows.append(tracking_row(work, sam_path, args.track_frames))
    for row in rows:
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
