"""Peak RSS of a real ComfyUI server tracking the whole shared clip: the IMAGE batch input against core VIDEO.

Each input runs in a fresh server (its VmHWM is that run's high-water mark): core ``Load Video``
of ``../shared/videos/bigbuckbunny.mp4`` (1280x720, 132 frames), then either ``Get Video
Components`` -> ``images`` (the clip becomes one float32 IMAGE batch) or the ``VIDEO`` itself ->
``video`` (decoded a frame at a time), the track node (up to 2 objects, ``redetect_every`` 10),
and the merged MASK saved. Random weights: a tiny Grounding DINO release file, and SAM 2.1 tiny's
weights as the hub's ``sam2_video`` folder reading frames at ``--size`` (default 512: the run
takes minutes, not hours; what the node holds per frame does not depend on it).

    python bench/comfy_track_memory.py [--version 0.33.0] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "comfyui"))  # first: its conftest (the servers' helpers), not the unit tests'
CLIP = ROOT.parent / "shared" / "videos" / "bigbuckbunny.mp4"
TRACK = "GroundingDinoSAMTrack (segment anything)"


def models(work: Path, size: int) -> Path:
    """A models folder (extra_model_paths layout) with a tiny Grounding DINO and SAM 2.1 tiny as a hub folder."""
    from reference_models import (
        TINY_DINO,
        bert_folder,
        meta_sam2,
        original_grounding_dino,
        sam2_video_at_size,
        save_original_release,
        save_sam2_release,
    )

    from grounded_sam import load_sam

    root = work / "models"
    (root / "grounding-dino").mkdir(parents=True)
    (root / "sams").mkdir()
    save_original_release(original_grounding_dino(bert_folder(work / "bert"), **TINY_DINO), root / "grounding-dino" / "groundingdino_tiny.pth")
    release = save_sam2_release(meta_sam2("2.1-tiny", seed=3), work / "sam2.1_hiera_tiny.pt")
    sam2_video_at_size(load_sam(release, "cpu").video, size).save_pretrained(root / "sams" / "sam2.1-hiera-tiny-bench")
    return root


def graph(kind: str) -> tuple[dict, str]:
    """Load Video -> (Get Video Components ->) the track node -> MaskToImage -> SaveImage; the graph and the SaveImage id."""
    nodes: dict[str, dict] = {}

    def add(class_type: str, **inputs) -> str:
        nodes[str(len(nodes) + 1)] = {"class_type": class_type, "inputs": inputs}
        return str(len(nodes))

    sam = add("SAMModelLoader (segment anything)", model_name="sam2.1-hiera-tiny-bench")
    dino = add("GroundingDinoModelLoader (segment anything)", model_name="groundingdino_tiny.pth")
    video = add("LoadVideo", file=CLIP.name)
    source = {"images": [add("GetVideoComponents", video=[video, 0]), 0]} if kind == "images" else {"video": [video, 0]}
    track = add(TRACK, sam_model=[sam, 0], grounding_dino_model=[dino, 0], prompt="bunny . tree", threshold=0.0, text_threshold=0.0,
                redetect_every=10, max_objects=2, **source)  # fmt: skip
    saved = add("SaveImage", images=[add("MaskToImage", mask=[track, 0]), 0], filename_prefix=f"track_{kind}")
    return nodes, saved


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="0.33.0")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    from client import ComfyServer
    from conftest import COMFYUI_DIR, install_pack

    home = COMFYUI_DIR / args.version
    if not (home / ".installed").is_file():
        sys.exit(f"ComfyUI {args.version} is not installed in {home}: run `bash scripts/install-comfyui.sh {args.version}`")
    install_pack(home / "ComfyUI")
    work = Path(tempfile.mkdtemp(prefix="comfy-track-memory-"))
    root = models(work, args.size)
    config = work / "extra_model_paths.yaml"
    config.write_text(f"bench:\n  base_path: {root}\n  sams: sams\n  grounding-dino: grounding-dino\n")
    results = {}
    for kind in ("images", "video"):
        server = ComfyServer(args.version, home, work / kind, extra_args=("--extra-model-paths-config", str(config)))
        shutil.copy(CLIP, server.input_dir / CLIP.name)
        server.start()
        try:
            started_mib = server.rss_mib()
            began = time.monotonic()
            nodes, saved = graph(kind)
            run = server.run(nodes, timeout=3600)
            if run.status != "success":
                raise RuntimeError(f"{kind}: {json.dumps(run.error)[:2000]}")
            frames = len(run.outputs(saved)["images"])
            results[kind] = {"peak_rss_mib": round(peak_mib(server.process.pid), 1), "rss_after_start_mib": round(started_mib, 1),
                             "seconds": round(time.monotonic() - began, 1), "masks_saved": frames}  # fmt: skip
        finally:
            server.stop()
        print(kind, results[kind], flush=True)
    print(json.dumps({"comfyui": args.version, "sam_input_size": args.size, "clip": "1280x720, 132 frames", "runs": results,
                      "video_over_images_peak": round(results["video"]["peak_rss_mib"] / results["images"]["peak_rss_mib"], 3)}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
