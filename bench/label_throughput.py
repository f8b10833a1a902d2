"""Images per minute of ``label_dataset``: one process against a local two-node Ray cluster, same images.

Full-size random-weight models in the release formats (Grounding DINO Swin-T, SAM ViT-B), the
shared photos and their mirror images, ``max_detections`` 10 (random weights find hundreds of
boxes; a real prompt finds a handful). The Ray cluster is a head and a worker on 127.0.0.1 with
one CPU each, so both runs use the machine's two cores.

    python bench/label_throughput.py --dino groundingdino_swint_ogc.pth --sam sam_vit_b_01ec64.pth
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from grounded_sam import DetectionSettings, label_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"


def make_images(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(SHARED.glob("*.jpg")):
        with Image.open(path) as image:
            image.convert("RGB").save(folder / path.name, quality=95)
            ImageOps.mirror(image.convert("RGB")).save(folder / f"{path.stem}-mirror.jpg", quality=95)
        count += 2
    return count


def timed(**kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    summary = label_dataset(**kwargs)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dino", required=True)
    parser.add_argument("--sam", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="label-throughput-"))
    atexit.register(shutil.rmtree, work, True)  # gigabytes of model files
    n = make_images(work / "images")
    job = {"sources": work / "images", "prompt": "person . bus . car", "dino": args.dino, "sam": args.sam,
           "settings": DetectionSettings(0.3, 0.25, max_detections=10), "precision": "fp32"}  # fmt: skip
    rows = {}
    seconds, summary = timed(out=work / "single", **job)
    rows["one process (2 threads)"] = (seconds, summary.done)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        seconds, summary = timed(out=work / "ray", ray=cluster.address, **job)
        rows["Ray Data, 2 nodes x 1 CPU, 2 actors"] = (seconds, summary.done)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    print(f"{n} images, {work}")
    print("| run | images | seconds | images/min |\n|---|---|---|---|")
    for name, (seconds, done) in rows.items():
        print(f"| {name} | {done} | {seconds:.1f} | {60 * done / seconds:.2f} |")
    print(json.dumps({k: {"seconds": v[0], "images": v[1]} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
