"""Our track node against ComfyUI 0.33's core ``SAM3_VideoTrack`` on the same full-size SAM 3 weights: time and peak RSS.

Both run in one real ComfyUI 0.33 server on the first frames of the shared clip (1280x720), the
prompt "person", two objects found on frame 0 and tracked through the rest (core's ``SAM3_VideoTrack``
cannot detect with SAM 3, only with SAM 3.1: it takes ``SAM3_Detect``'s masks of frame 0, and ours
detects on frame 0 only, ``redetect_every`` = the frame count); each graph loads the frames as an IMAGE
batch and saves one merged mask per frame. The server's resident memory is sampled
every 0.2 s while each graph runs. The file is the full-size random SAM 3 of ``bench/core_sam3.py``
(~3.4 GB, built here); a few minutes per frame pair on a 2-core CPU: a measurement for the closing
note, not part of the test suite. Random weights find arbitrary objects, so the two nodes' masks are
reported (their IoU per frame), not asserted; a node that fails is reported with its error and time.

    python bench/core_sam3_track.py [--frames 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests" / "comfyui"), str(ROOT / "tests"), str(ROOT)]

from client import ComfyServer  # noqa: E402
from core_sam3 import CORE_FILE, FILE, full_size_files, iou, running, saved_masks  # noqa: E402

from grounded_sam.video.frames import open_frames  # noqa: E402

CLIP = ROOT.parent / "shared" / "videos" / "bigbuckbunny.mp4"
PHRASE, OBJECTS = "person", 2


def batch(nodes: dict, pngs: list[str]) -> list:
    """LoadImage per frame, joined by ImageBatch: the IMAGE batch a video loader gives."""
    loads = []
    for png in pngs:
        loads.append(str(len(nodes) + 1))
        nodes[loads[-1]] = {"class_type": "LoadImage", "inputs": {"image": png}}
    images = [loads[0], 0]
    for other in loads[1:]:
        key = str(len(nodes) + 1)
        nodes[key] = {"class_type": "ImageBatch", "inputs": {"image1": images, "image2": [other, 0]}}
        images = [key, 0]
    return images


def core_graph(pngs: list[str], every: int) -> tuple[dict, str]:
    """Core's way with SAM 3: ``SAM3_Detect`` on frame 0 gives the objects' masks, ``SAM3_VideoTrack`` follows them
    (it detects during tracking only with SAM 3.1; with SAM 3 it requires these initial masks)."""
    nodes: dict = {}
    images = batch(nodes, pngs)
    nodes.update({
        "m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CORE_FILE}},
        "t": {"class_type": "CLIPTextEncode", "inputs": {"text": f"{PHRASE}:{OBJECTS}", "clip": ["m", 1]}},
        "f": {"class_type": "SAM3_Detect", "inputs": {"model": ["m", 0], "image": ["1", 0], "conditioning": ["t", 0],
                                                      "threshold": 0.0, "refine_iterations": 0, "individual_masks": True}},
        "v": {"class_type": "SAM3_VideoTrack", "inputs": {"images": images, "model": ["m", 0], "initial_mask": ["f", 0],
                                                          "conditioning": ["t", 0], "detection_threshold": 0.0,
                                                          "max_objects": OBJECTS, "detect_interval": every}},
        "k": {"class_type": "SAM3_TrackToMask", "inputs": {"track_data": ["v", 0], "object_indices": ""}},
        "i": {"class_type": "MaskToImage", "inputs": {"mask": ["k", 0]}},
        "s": {"class_type": "SaveImage", "inputs": {"images": ["i", 0], "filename_prefix": "core_track"}},
    })  # fmt: skip
    return nodes, "s"


def our_graph(pngs: list[str], every: int) -> tuple[dict, str]:
    nodes: dict = {}
    images = batch(nodes, pngs)
    nodes.update({
        "m": {"class_type": "SAMModelLoader (segment anything)", "inputs": {"model_name": FILE}},
        "d": {"class_type": "GroundingDinoModelLoader (segment anything)", "inputs": {"model_name": FILE}},
        "v": {"class_type": "GroundingDinoSAMTrack (segment anything)", "inputs": {"sam_model": ["m", 0], "grounding_dino_model": ["d", 0],
              "images": images, "prompt": PHRASE, "threshold": 0.0, "redetect_every": every, "max_objects": OBJECTS}},
        "i": {"class_type": "MaskToImage", "inputs": {"mask": ["v", 0]}},
        "s": {"class_type": "SaveImage", "inputs": {"images": ["i", 0], "filename_prefix": "our_track"}},
    })  # fmt: skip
    return nodes, "s"


def timed(server: ComfyServer, nodes: dict) -> tuple[object, float, float]:
    """Run a graph; (run, its seconds, the server's peak RSS in MiB while it ran, sampled every 0.2 s), failed or not."""
    peak, done = [server.rss_mib()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(server.rss_mib())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = server.run(nodes, timeout=7200)
    finally:
        done.set()
        sampler.join()
    return run, run.seconds, max(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    model, _path, _work, server = full_size_files("core-sam3-track-")
    del model
    pngs = []
    for index, frame in enumerate(open_frames(CLIP)):
        if index == args.frames:
            break
        pngs.append(f"clip_{index:03d}.png")
        Image.fromarray(frame.numpy()).save(server.input_dir / pngs[-1])
    with running(server):
        idle = server.rss_mib()
        results: dict = {"frames": args.frames, "server_idle_rss_mib": round(idle)}
        masks = {}
        for name, graph in (("ours", our_graph), ("core", core_graph)):
            nodes, saved = graph(pngs, args.frames)  # detection on frame 0 only: all core's tracker can do with SAM 3
            run, seconds, peak = timed(server, nodes)
            results[name] = {"status": run.status, "seconds": round(seconds, 1), "peak_rss_mib": round(peak)}
            if run.status == "success":
                masks[name] = saved_masks(server, run, saved)
                results[name]["covered"] = [round(float(m.float().mean()), 3) for m in masks[name]]
            else:  # a failed node is a result too: its error, where it stopped
                results[name]["error"] = f"{run.error['exception_type']}: {run.error['exception_message'].strip()} ({run.error['traceback'][-1].strip()[:200]})"
            print(name, json.dumps(results[name]), flush=True)
            server.free()
        if len(masks) == 2:
            results["mask_iou_per_frame"] = [round(iou(a, b), 3) for a, b in zip(masks["ours"], masks["core"], strict=True)]
        results["time_ratio_core_over_ours"] = round(results["core"]["seconds"] / results["ours"]["seconds"], 2)
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
