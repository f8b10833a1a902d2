"""``label_dataset``: the whole job, one process or a Ray cluster, then the exports.

Each finished image is on disk before the next starts; images already done by an earlier run
of the same job are skipped; bad images are error lines. The exports are rebuilt from the
lines at the end, so they always hold every image done so far, by this run or earlier ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.run_hooks import RunHooks
from ..settings import DetectionSettings
from .export import write_coco, write_yolo
from .jobs import LabelTask
from .sources import ImageItem, list_images, parse_shard, take_shard
from .store import LabelStore


@dataclass
class LabelSummary:
    total: int = 0  # images in this job (this shard)
    done: int = 0  # labelled by this run
    skipped: int = 0  # labelled by an earlier run of the same job
    failed: int = 0  # error lines written by this run
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"file_name", "path", "error"} of this run
    annotations: int = 0  # objects in coco.json (every image done so far)

    def line(self) -> str:
        return (f"{self.total} image(s): {self.done} labelled, {self.skipped} already done (skipped), "
                f"{self.failed} failed")  # fmt: skip


class Progress:
    """Callbacks for a host's progress display: ``start(todo)``, ``image(i, name)`` -> hooks, ``done(i, record)``."""

    def start(self, todo: int) -> None: ...

    def image(self, index: int, name: str) -> RunHooks:
        return RunHooks()

    def done(self, index: int, record: dict[str, Any]) -> None: ...


def require(module: str, extra: str, what: str) -> None:
    """A clear error (before any model loads) when an optional package is not installed."""
    from importlib.util import find_spec

    from ..errors import InputError

    if find_spec(module) is None:
        raise InputError(f"{what} needs the {module} package: pip install 'grounded-sam[{extra}]'")


def _local_records(task: LabelTask, todo: list[ImageItem], device: str, progress: Progress) -> Iterator[dict[str, Any]]:
    from .labeler import ImageLabeler, load_pipeline

    labeler = ImageLabeler(task, load_pipeline(task, device))
    for index, item in enumerate(todo):
        yield labeler(item, progress.image(index, item.file_name))


def label_dataset(
    sources: list[str | Path] | str | Path,
    prompt: str,
    out: str | Path,
    dino: str | Path,
    sam: str | Path,
    *,
    exclude: str = "",
    settings: DetectionSettings | None = None,
    precision: str = "auto",
    device: str = "auto",
    shard: str | None = None,
    yolo: bool = False,
    ray: str | None = None,
    ray_workers: int | None = None,
    progress: Progress | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> LabelSummary:
    """Label every image of ``sources`` (folders, globs, text files of paths) into ``out``.

    Writes ``results.jsonl`` (a line per image, as it finishes), ``errors.jsonl``, ``coco.json``
    and, with ``yolo=True``, ``yolo/``. ``shard="i/N"`` labels every N-th image from the i-th;
    ``ray="auto"`` or an address runs the images on a Ray cluster. ``dino``/``sam`` are model
    files or folders. Re-running the same job in the same ``out`` skips what is done.
    """
    from ..runtime.devices import choose_precision, resolve_device

    require("pycocotools", "label", "labelling (COCO masks)")
    if yolo:
        require("cv2", "label", "--yolo (mask outlines)")
    if ray is not None:
        require("ray", "ray", "--ray")
    progress = progress or Progress()
    task = LabelTask(str(dino), str(sam), prompt, exclude, settings or DetectionSettings(), precision)
    resolved = resolve_device(device)
    from ..runtime.devices import accelerators

    effective = choose_precision(precision, resolved.type, accelerators())
    items = list_images([sources] if isinstance(sources, (str, Path)) else list(sources))
    mine = take_shard(items, *parse_shard(shard)) if shard else items
    summary = LabelSummary(total=len(mine))
    with LabelStore(Path(out), task.description(effective, shard)) as store:
        done_before = store.done_names()
        todo = [item for item in mine if item.file_name not in done_before]
        summary.skipped = len(mine) - len(todo)
        if on_ready:
            on_ready(f"{len(mine)} image(s), {summary.skipped} already done, {len(todo)} to label")
        progress.start(len(todo))
        if ray is None:
            records = _local_records(task, todo, str(resolved), progress) if todo else iter(())
        else:
            from .on_ray import ray_records

            records = ray_records(task, todo, ray, ray_workers, device) if todo else iter(())
        for index, record in enumerate(records):
            store.add(record)
            if "error" in record:
                summary.failed += 1
                summary.errors.append({k: record[k] for k in ("file_name", "path", "error")})
            else:
                summary.done += 1
            progress.done(index, record)
    summary.annotations = export(Path(out), mine, task.categories(), yolo)
    return summary


def export(out: Path, items: list[ImageItem], categories: list[dict[str, Any]], yolo: bool) -> int:
    """``coco.json`` (and ``yolo/``) from the result lines; the number of annotations written."""
    counts = write_coco(out, items, categories)
    if yolo:
        write_yolo(out, items, categories)
    return counts["annotations"]
