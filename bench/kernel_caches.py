"""What torch's CPU kernel caches cost a long-running process in bf16, with torch's sizes and with the pack's.

Each side is a fresh process that loads a small Grounding DINO and SAM (the test suite's random-weight files),
then segments ``--shapes`` images in bf16, each of a new size and with prompts of 1 to 13 phrases, as a server
is given them. It prints the process's anonymous memory over what it held once the models were loaded (after a
collection and a heap trim), every 7 images, and the time. Needs a CPU with native bf16 (on others bf16 runs as
fp32 and builds no bf16 kernels).

    python bench/kernel_caches.py [--shapes 70]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grounded_sam.runtime.kernel_caches import KERNEL_CACHE_VARIABLES  # noqa: E402  (sets nothing: the pack's init does)

WORDS = "person bus window wheel dog cat tree car road sky cloud house door".split()


def build(folder: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from reference_models import TINY_DINO, bert_folder, meta_sam, original_grounding_dino, save_original_release

    dino = save_original_release(original_grounding_dino(bert_folder(folder / "bert"), **TINY_DINO), folder / "dino.pth")
    torch.save(meta_sam().state_dict(), folder / "sam.pth")
    return dino, folder / "sam.pth"


def side(bounded: bool, dino: str, sam: str, shapes: int) -> None:
    """One process's run: prints a JSON line of (images, MiB over the start, seconds) rows."""
    if bounded:
        import grounded_sam.comfy  # noqa: F401  (what ComfyUI does when it loads the pack)
    import gc

    import torch

    from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam
    from grounded_sam.runtime.freed_memory import release_freed_memory

    def anon_mib() -> float:  # once what is freed is handed back, as the pack does when ComfyUI frees a model
        gc.collect()
        release_freed_memory()
        return int(Path("/proc/self/status").read_text().split("RssAnon:")[1].split()[0]) / 1024

    pipeline = GroundedSam(load_grounding_dino(dino, "cpu"), load_sam(sam, "cpu"), "bf16")
    settings = DetectionSettings(0.0, 0.25, max_detections=2)
    generator = torch.Generator().manual_seed(0)
    start, began, rows = anon_mib(), time.perf_counter(), []
    for i in range(shapes):
        image = torch.rand(1, 360 + 24 * (i % 7), 480 + 40 * (i // 7), 3, generator=generator)
        pipeline.segment(image, " . ".join(WORDS[: 1 + i % len(WORDS)]), settings)
        if i % 7 == 6 or i == shapes - 1:
            rows.append((i + 1, round(anon_mib() - start, 1), round(time.perf_counter() - began, 1)))
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, default=70)
    parser.add_argument("--side", nargs=3, metavar=("BOUNDED", "DINO", "SAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.side[0] == "1", args.side[1], args.side[2], args.shapes)
        return
    with tempfile.TemporaryDirectory(prefix="kernel-caches-") as work:
        dino, sam = build(Path(work))
        clean = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
        results = {}
        for name, bounded in (("torch's sizes (1024 each)", "0"), ("the pack's bound", "1")):
            argv = [sys.executable, __file__, "--shapes", str(args.shapes), "--side", bounded, str(dino), str(sam)]
            done = subprocess.run(argv, env=clean, capture_output=True, text=True, check=True)
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    for name, rows in results.items():
        print(f"{name}: " + ", ".join(f"{n} images +{mib:.0f} MiB" for n, mib, _ in rows) + f"; {rows[-1][2]:.1f} s")


if __name__ == "__main__":
    main()
