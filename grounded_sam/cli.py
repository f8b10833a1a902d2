"""``grounded-sam segment IMAGE... --prompt "dog . ball" --dino PATH --sam PATH --out DIR``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .dino.detector import DetectionSettings
from .dino.load import load_grounding_dino
from .errors import GroundedSamError
from .images import load_image_file
from .model_files import DINO_FOLDER, SAM_FOLDER, default_models_dir, resolve_model
from .pipeline import PRECISIONS, GroundedSam
from .sam.load import load_sam


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grounded-sam", description="Text-prompted image segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="write one mask PNG per image (and per object) plus detections.json")
    seg.add_argument("images", nargs="+", type=Path)
    seg.add_argument("--prompt", required=True, help='objects to find, separated by " . ", e.g. "dog . red ball"')
    seg.add_argument("--dino", required=True, help="Grounding DINO file/folder, or a model name in --models-dir")
    seg.add_argument("--sam", required=True, help="SAM file/folder, or a model name in --models-dir")
    seg.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    seg.add_argument("--models-dir", type=Path, default=default_models_dir(), help="a ComfyUI-style models folder (env GROUNDED_SAM_MODELS_DIR)")
    seg.add_argument("--box-threshold", type=float, default=0.3)
    seg.add_argument("--text-threshold", type=float, default=0.25)
    seg.add_argument("--nms-iou", type=float, default=0.7, help="1.0 disables non-maximum suppression")
    seg.add_argument("--max-detections", type=int, default=0, help="0 keeps every detection")
    seg.add_argument("--per-object", action="store_true", help="also write one mask PNG per detected object")
    seg.add_argument("--no-download", action="store_true", help="never download a missing known model")
    seg.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="bf16/fp16: faster, masks differ slightly")
    return parser


class _DownloadBar:
    """A tqdm bar that appears only if a download really starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=f"downloading {self.name}")
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "object"


def _write_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def run_segment(args: argparse.Namespace) -> int:
    settings = DetectionSettings(args.box_threshold, args.text_threshold, args.nms_iou, args.max_detections or None)

    def find(name: str, folder: str) -> Path:
        dirs = [args.models_dir / folder] if args.models_dir else []
        with _DownloadBar(name) as bar:
            return resolve_model(name, folder, dirs, allow_download=not args.no_download, on_progress=bar.update)

    detector = load_grounding_dino(find(args.dino, DINO_FOLDER))
    segmenter = load_sam(find(args.sam, SAM_FOLDER))
    pipeline = GroundedSam(detector, segmenter, args.precision)
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for image_path in args.images:
        found = pipeline.segment(load_image_file(image_path), args.prompt, settings)
        stem = image_path.stem
        _write_mask(found.merged_masks()[0].numpy(), args.out / f"{stem}_mask.png")
        objects = found.to_json()
        for k, row in enumerate(objects):
            row.pop("frame")
            if args.per_object:
                name = f"{stem}_object{k:02d}_{_slug(row['label'])}.png"
                _write_mask(found.masks[k].numpy(), args.out / name)
                row["mask_file"] = name
        report.append({"image": str(image_path), "mask_file": f"{stem}_mask.png", "objects": objects})
        print(f"{image_path}: {len(objects)} object(s)")
    (args.out / "detections.json").write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_segment(args)
    except GroundedSamError as err:
        print(f"grounded-sam: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
