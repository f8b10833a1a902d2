"""COCO mask and box AP of a labelling run against ground truth (pycocotools' COCOeval).

Images are matched by ``file_name`` and categories by name, so a ground-truth file made by any
tool works; ground-truth images with no labelled result count as misses (and are named).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from ..errors import InputError

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {path} is not JSON: {err}") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise InputError(f"{what} {path} is not a COCO instances file (needs images, annotations and categories)")
    return data


def evaluate(predictions: str | Path, ground_truth: str | Path, iou_types: tuple[str, ...] = ("segm", "bbox")) -> dict[str, Any]:
    """``{"segm": {"AP": ..., ...}, "bbox": {...}, "images": n, "missing": [...]}`` for a run's ``coco.json``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    pred, gt = _load(Path(predictions), "predictions"), _load(Path(ground_truth), "ground truth")
    gt_image = {image["file_name"]: image["id"] for image in gt["images"]}
    gt_category = {c["name"].strip().lower(): c["id"] for c in gt["categories"]}
    pred_image = {image["id"]: image["file_name"] for image in pred["images"]}
    pred_category = {c["id"]: c["name"].strip().lower() for c in pred["categories"]}
    unknown = sorted(set(pred_category.values()) - set(gt_category))
    shared = [gt_image[name] for name in pred_image.values() if name in gt_image]
    if not shared:
        raise InputError("no image of the predictions is in the ground truth (images are matched by file_name)")
    missing = sorted(name for name in gt_image if name not in set(pred_image.values()))
    results = [
        {**a, "image_id": gt_image[pred_image[a["image_id"]]], "category_id": gt_category[pred_category[a["category_id"]]]}
        for a in pred["annotations"]
        if pred_image[a["image_id"]] in gt_image and pred_category[a["category_id"]] in gt_category
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
    report: dict[str, Any] = {"images": len(gt_image), "missing": missing, "unknown_categories": unknown}
    for iou_type in iou_types:
        # box AP from our boxes: loadRes would replace them with the masks' boxes if it saw masks
        rows = [r if iou_type == "segm" else {k: v for k, v in r.items() if k != "segmentation"} for r in results]
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            found = truth.loadRes(rows) if rows else None
            if found is None:
                report[iou_type] = dict.fromkeys(STAT_NAMES, 0.0)
                continue
            evaluator = COCOeval(truth, found, iou_type)
            evaluator.params.imgIds = sorted(gt_image.values())  # unlabelled ground-truth images count as misses
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        report[iou_type] = {name: round(float(v), 6) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
        report[iou_type + "_table"] = text.getvalue()
    return report
