"""Our segment node against ComfyUI 0.33's core ``SAM3_Detect`` on the same full-size SAM 3 weights.

The core node builds only the full-size architecture, so this needs a full-size file (random
weights, Meta's release layout with the tracker, ~3.4 GB) and a few minutes per run on a CPU:
it is a measurement for the closing note, not part of the test suite. Both nodes run in one
real ComfyUI 0.33 server on zidane.jpg with the prompt "person"; Meta's ``Sam3Processor`` on the
same weights is the reference for both.

    python bench/core_sam3.py [--count 5] [--refine 0 2]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "comfyui"), str(ROOT / "tests"), str(ROOT)]

from client import ComfyServer  # noqa: E402
from conftest import COMFYUI_DIR, SHARED_IMAGES, install_pack  # noqa: E402
from reference_models import calibrate_sam3, meta_sam3, meta_sam3_on_cpu, save_sam3_release  # noqa: E402

from grounded_sam.media.images import load_image_file  # noqa: E402

VERSION = "0.33.0"
FILE = "gs_sam3_full_random.pt"
# ComfyUI's CLIP loader refuses Meta's [1024, 512] CLIP text projection (neither model reads it):
# the core node gets the file without it, as repackaged SAM 3 files come.
CORE_FILE = "gs_sam3_full_random_repackaged.pt"
CLIP_PROJECTION = "detector.backbone.language_backbone.encoder.text_projection"
PHRASE = "person"
SEGMENT = "GroundingDinoSAMSegment (segment anything)"


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def saved_masks(server: ComfyServer, run, node: str) -> torch.Tensor:
    masks = []
    for image in run.outputs(node)["images"]:
        path = server.output_dir / image.get("subfolder", "") / image["filename"]
        masks.append(torch.from_numpy(np.asarray(Image.open(path).convert("L")) > 127))
    return torch.stack(masks)


def core_graph(image: str, count: int, refine: int) -> tuple[dict, dict]:
    nodes = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CORE_FILE}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": f"{PHRASE}:{count}", "clip": ["2", 1]}},
        "4": {"class_type": "SAM3_Detect", "inputs": {"model": ["2", 0], "image": ["1", 0], "conditioning": ["3", 0],
                                                      "threshold": 0.0, "refine_iterations": refine, "individual_masks": True}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": f"core_refine{refine}"}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }  # fmt: skip
    return nodes, {"masks": "6", "boxes": "7"}


def our_graph(image: str, count: int) -> tuple[dict, dict]:
    nodes = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SAMModelLoader (segment anything)", "inputs": {"model_name": FILE}},
        "3": {"class_type": "GroundingDinoModelLoader (segment anything)", "inputs": {"model_name": FILE}},
        "4": {"class_type": SEGMENT, "inputs": {"sam_model": ["2", 0], "grounding_dino_model": ["3", 0], "image": ["1", 0],
                                                "prompt": PHRASE, "threshold": 0.0, "max_detections": count}},
        "5": {"class_type": "ObjectMasks (segment anything)", "inputs": {"detections": ["4", 2]}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "ours"}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["4", 3]}},
    }  # fmt: skip
    return nodes, {"masks": "7", "json": "8"}


def compare(name: str, boxes: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor, meta: dict) -> dict:
    """Each instance against Meta's query with the nearest box (Meta's boxes clipped to the frame, as both nodes
    report them): box distance, score difference, mask IoU, and that query's rank in Meta's scores."""
    h, w = masks.shape[-2:]
    clipped = meta["boxes"].clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
    match = torch.cdist(boxes, clipped).argmin(dim=1)
    row = {
        "instances": len(boxes),
        "distinct_meta_matches": int(match.unique().numel()),
        "max_box_diff_px": float((boxes - clipped[match]).abs().max()),
        "max_score_diff": float((scores - meta["scores"][match]).abs().max()),
        "min_mask_iou": min(iou(m, meta["masks"][j]) for m, j in zip(masks, match.tolist(), strict=True)),
        "meta_rank_of_each": [int((meta["scores"] > meta["scores"][j]).sum()) for j in match.tolist()],
    }
    print(f"{name}: {json.dumps(row)}")
    return row


def full_size_files(prefix: str):  # noqa: ANN201 - (Meta's model, our file, the work folder, a server to start)
    """A full-size random SAM 3 (calibrated on bus.jpg) saved as Meta's release file for our loaders and, without CLIP's
    projection, for the core loader; both linked into ComfyUI 0.33's model folders (unlinked at exit), and a
    server on that tree with this pack installed, not yet started."""
    home = COMFYUI_DIR / VERSION
    if not (home / ".installed").is_file():
        raise SystemExit(f"ComfyUI {VERSION} is not installed: bash scripts/install-comfyui.sh {VERSION}")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    tree = home / "ComfyUI"
    links = [tree / "models" / "checkpoints" / CORE_FILE, tree / "models" / "sam3" / FILE]
    atexit.register(lambda: [p.unlink(missing_ok=True) for p in links])

    bus = load_image_file(SHARED_IMAGES / "bus.jpg")[0]
    model = meta_sam3(depth=32, global_blocks=(7, 15, 23, 31), text_layers=24, interactive=True, seed=9, memory_layers=4, fusion_layers=6)
    calibrate_sam3(model, bus)
    path = save_sam3_release(model, work / FILE)
    state = torch.load(path, weights_only=True, mmap=True)["model"]
    torch.save({"model": {k: v for k, v in state.items() if k != CLIP_PROJECTION}}, work / CORE_FILE)
    del state
    install_pack(tree)
    for link, source in zip(links, (work / CORE_FILE, path), strict=True):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        os.link(source, link)
    return model, path, work, ComfyServer(VERSION, home, work / "server")


@contextlib.contextmanager
def running(server: ComfyServer):  # noqa: ANN201 - a context manager
    """The server started for the block and stopped after it, failed or not; its log's tail printed with KEEP_LOG=1."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("KEEP_LOG"):
            print(server.log_text()[-5000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5, help="instances kept by both nodes")
    parser.add_argument("--refine", type=int, nargs="*", default=[0], help="the core node's refine_iterations to run "
                        "(its default, 2, runs the ViT twice more per object: over ten minutes on a 2-core CPU)")
    args = parser.parse_args()
    model, _path, _work, server = full_size_files("core-sam3-")
    zidane = load_image_file(SHARED_IMAGES / "zidane.jpg")[0]
    from sam3.model.sam3_image_processor import Sam3Processor

    with meta_sam3_on_cpu():
        processor = Sam3Processor(model, device="cpu", confidence_threshold=0.0)
        out = processor.set_text_prompt(PHRASE, processor.set_image(Image.fromarray(zidane.numpy())))
        meta = {"scores": out["scores"].clone(), "boxes": out["boxes"].clone(), "masks": out["masks"][:, 0].clone()}
    del model, processor, out

    Image.fromarray(zidane.numpy()).save(server.input_dir / "zidane.png")
    with running(server):
        results = {}
        nodes, ids = our_graph("zidane.png", args.count)
        run = server.run(nodes, timeout=3600)
        assert run.status == "success", run.error
        rows = json.loads("".join(run.outputs(ids["json"])["text"]))
        boxes = torch.tensor([r["box_xyxy"] for r in rows])
        results["ours"] = compare("our node", boxes, torch.tensor([r["score"] for r in rows]), saved_masks(server, run, ids["masks"]), meta)
        results["ours"]["seconds"] = round(run.seconds, 1)
        for refine in args.refine:
            nodes, ids = core_graph("zidane.png", args.count, refine)
            run = server.run(nodes, timeout=3600)
            assert run.status == "success", run.error
            text = "".join(run.outputs(ids["boxes"])["text"])
            found = json.loads(text)[0]
            boxes = torch.tensor([[d["x"], d["y"], d["x"] + d["width"], d["y"] + d["height"]] for d in found])
            scores = torch.tensor([d["score"] for d in found])
            key = f"core_refine_{refine}"
            results[key] = compare(f"core SAM3_Detect, refine_iterations={refine}", boxes, scores, saved_masks(server, run, ids["masks"]), meta)
            results[key]["seconds"] = round(run.seconds, 1)
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
