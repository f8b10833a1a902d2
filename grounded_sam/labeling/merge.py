"""Join the folders of ``--shard i/N`` runs into one job folder and export it.

Shards of one job share the models, prompt and settings (checked through their ``job.json``)
and their image ids come from the same full list, so joining is concatenating their lines.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError
from .jobs import coco_categories
from .runner import export
from .sources import ImageItem
from .store import ERRORS_FILE, JOB_FILE, RESULTS_FILE, _drop_torn_tail, job_differences, read_lines


def _job(folder: Path) -> dict[str, Any]:
    path = folder / JOB_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not a labelling run's folder (no {JOB_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def merge_shards(folders: list[Path], out: Path, yolo: bool = False) -> dict[str, Any]:
    """Write ``out`` as if one run had labelled every shard's images; returns counts and missing shards."""
    folders = [Path(f) for f in folders]
    jobs = [_job(f) for f in folders]
    first = {**jobs[0], "shard": None}
    for folder, job in zip(folders[1:], jobs[1:], strict=True):
        changed = job_differences(first, {**job, "shard": None})
        if changed:
            raise InputError(f"{folder} is a shard of another job than {folders[0]}: " + "; ".join(changed))
    counts = {job["shard"].split("/")[1] for job in jobs if job.get("shard")}
    if len(counts) > 1:
        raise InputError("these shards split the job in different ways: " + ", ".join(sorted(job["shard"] for job in jobs)))
    missing = []
    if counts:
        n = int(counts.pop())
        have = {int(job["shard"].split("/")[0]) for job in jobs if job.get("shard")}
        missing = [f"{i}/{n}" for i in range(n) if i not in have]
    if Path(out).resolve() in {f.resolve() for f in folders}:
        raise InputError("--out must be a new folder, not one of the shards")
    out.mkdir(parents=True, exist_ok=True)
    (out / JOB_FILE).write_text(json.dumps(first, indent=2) + "\n", encoding="utf-8")
    items: dict[str, ImageItem] = {}
    with open(out / RESULTS_FILE, "w", encoding="utf-8") as results, open(out / ERRORS_FILE, "w", encoding="utf-8") as errors:
        for folder in folders:
            _drop_torn_tail(folder / RESULTS_FILE)
            with open(folder / RESULTS_FILE, encoding="utf-8") as f:
                shutil.copyfileobj(f, results)
            for record in read_lines(folder / RESULTS_FILE):
                items[record["file_name"]] = ImageItem(record["id"], record["path"], record["file_name"])
            for record in read_lines(folder / ERRORS_FILE):
                errors.write(json.dumps(record, separators=(",", ":")) + "\n")
    ordered = sorted(items.values(), key=lambda item: item.id)
    annotations = export(out, ordered, coco_categories(first["categories"]), yolo)
    return {"images": len(ordered), "annotations": annotations, "missing_shards": missing}
