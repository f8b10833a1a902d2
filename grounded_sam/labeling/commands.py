"""``grounded-sam label``, ``merge`` and ``eval``: the parsers (torch-free) and what they run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime.run_hooks import RunHooks


def add_label_arguments(parser: argparse.ArgumentParser, model_arguments) -> None:  # noqa: ANN001 - cli's helper
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="image folders (taken recursively), glob patterns ('data/**/*.jpg', quoted) or .txt files of image paths")
    parser.add_argument("--prompt", required=True, help='objects to label, separated by " . ": each phrase is a category')
    parser.add_argument("--exclude", default="", help='things to leave out of every mask, e.g. "shadow"')
    parser.add_argument("--out", required=True, type=Path,
                        help="the job's folder: results.jsonl, errors.jsonl, coco.json (and yolo/); re-run to resume")
    model_arguments(parser)
    parser.add_argument("--yolo", action="store_true", help="also write YOLO segmentation labels and data.yaml in <out>/yolo")
    parser.add_argument("--shard", help="label only shard i of N (every N-th image from the i-th), e.g. 0/4; join shards with merge")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="run on a Ray cluster (auto: the cluster started on this machine, or a new local one)")
    parser.add_argument("--ray-workers", type=int, help="model actors on Ray (default: one per GPU, else one per node)")


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD_DIR", help="the --out folders of the shards")
    parser.add_argument("--out", required=True, type=Path, help="a new folder for the joined job")
    parser.add_argument("--yolo", action="store_true", help="also write YOLO labels and data.yaml")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="a labelling run's coco.json (or its folder)")
    parser.add_argument("--gt", required=True, type=Path, help="ground truth: a COCO instances JSON (images matched by file_name)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


class _BarProgress:
    """The label loop's progress on a tqdm bar (images/s and ETA over the images to label)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def start(self, todo: int) -> None:
        from ..runtime.terminal_bar import ImagesBar

        self.bar = ImagesBar(todo, enabled=self.enabled)

    def image(self, index: int, name: str) -> RunHooks:
        return self.bar.image(index, name)

    def done(self, index: int, record: dict[str, Any]) -> None:
        if "error" in record:
            self.bar.write(f"grounded-sam: error: {record['path']}: {record['error']} (skipped)", file=sys.stderr)
        self.bar.done(index)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.bar.close()


def run_label(args: argparse.Namespace, find_models) -> int:  # noqa: ANN001 - cli's model finder
    from ..runtime.devices import resolve_device
    from ..settings import DetectionSettings
    from .jobs import LabelTask
    from .runner import label_dataset
    from .sources import list_images, parse_shard

    settings = DetectionSettings(args.box_threshold, args.text_threshold, args.nms_iou, args.max_detections or None)
    LabelTask("", "", args.prompt, args.exclude, settings)  # prompt checks
    if args.shard:
        parse_shard(args.shard)
    resolve_device(args.device)
    list_images(args.sources)  # "no images in ..." before the models are looked for
    dino_path, sam_path = find_models(args)
    progress = _BarProgress(not args.no_progress)
    try:
        summary = label_dataset(
            args.sources, args.prompt, args.out, dino_path, sam_path, exclude=args.exclude, settings=settings,
            precision=args.precision, device=args.device, shard=args.shard, yolo=args.yolo, ray=args.ray,
            ray_workers=args.ray_workers, progress=progress, on_ready=lambda text: print(f"grounded-sam: {text}", file=sys.stderr),
        )  # fmt: skip
    finally:
        progress.close()
    print(f"grounded-sam: {summary.line()}; {summary.annotations} object(s) in {args.out / 'coco.json'}"
          + (f"; failures listed in {args.out / 'errors.jsonl'}" if summary.failed else ""), file=sys.stderr)  # fmt: skip
    if summary.total and summary.done + summary.skipped == 0:
        return 2 if summary.failed == summary.total else 1
    return 1 if summary.failed else 0


def run_merge(args: argparse.Namespace) -> int:
    from .merge import merge_shards

    result = merge_shards(args.shards, args.out, args.yolo)
    print(f"grounded-sam: {result['images']} image(s), {result['annotations']} object(s) in {args.out / 'coco.json'}", file=sys.stderr)
    if result["missing_shards"]:
        print(f"grounded-sam: warning: shards not given: {', '.join(result['missing_shards'])}", file=sys.stderr)
        return 1
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    predictions = args.predictions / "coco.json" if args.predictions.is_dir() else args.predictions
    report = evaluate(predictions, args.gt)
    for iou_type in ("segm", "bbox"):
        stats = report[iou_type]
        print(f"{'mask' if iou_type == 'segm' else 'box'} AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  "
              f"AP75 {stats['AP75']:.4f}  AR100 {stats['AR100']:.4f}")  # fmt: skip
    if report["missing"]:
        print(f"grounded-sam: warning: {len(report['missing'])} ground-truth image(s) have no labels (counted as misses), "
              f"e.g. {report['missing'][0]}", file=sys.stderr)  # fmt: skip
    if report["unknown_categories"]:
        print(f"grounded-sam: warning: categories not in the ground truth (ignored): {', '.join(report['unknown_categories'])}",
              file=sys.stderr)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in report.items() if not k.endswith("_table")}, indent=2) + "\n")
    return 0
