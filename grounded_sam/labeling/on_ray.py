"""The same job as a Ray Data pipeline: image items -> a pool of model actors -> result lines.

Each actor loads the models once and labels images one at a time; the driver writes each
line as it arrives (so resume and the exports work exactly as in one process). Model paths
must exist on every node (a shared folder, or the same path on each machine).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import InputError
from .jobs import LabelTask
from .sources import ImageItem


class _RayLabeler:
    """A Ray Data actor: models loaded once, one result line (as JSON text) per image."""

    def __init__(self, task: LabelTask, device: str, threads: int) -> None:
        import torch

        from .labeler import ImageLabeler, load_pipeline

        torch.set_num_threads(max(1, threads))
        self.labeler = ImageLabeler(task, load_pipeline(task, device))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lines = []
        for id_, path, file_name in zip(batch["id"], batch["path"], batch["file_name"], strict=True):
            record = self.labeler(ImageItem(int(id_), str(path), str(file_name)))
            lines.append(json.dumps(record, separators=(",", ":")))
        return {"record": np.array(lines, dtype=object)}


def _connect(address: str) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'ray[data]' (or pip install 'grounded-sam[ray]')") from None
    if not ray.is_initialized():
        # "auto": a cluster started on this machine (ray start), else a new local one
        ray.init(address=None if address == "auto" else address, log_to_driver=False, include_dashboard=False)


def _pool(workers: int | None) -> tuple[int, int, int]:
    """(actors, CPUs per actor, GPUs per actor): by default one actor per node, the smallest node's CPUs each."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = min(int(n["Resources"].get("CPU", 1)) for n in nodes) if nodes else 1
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return (workers or gpus), 1, 1
    return (workers or len(nodes) or 1), max(1, cpus), 0


def ray_records(task: LabelTask, todo: list[ImageItem], address: str, workers: int | None, device: str) -> Iterator[dict[str, Any]]:
    """Result lines of ``todo`` from a pool of actors, in the order they finish."""
    _connect(address)
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the host shows its own bar; Ray Data's notes would break it up
    context.issue_detectors_config.detectors = []  # "high memory": model actors hold models, as they should
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    actors, cpus, gpus = _pool(workers)
    items = ray.data.from_items([asdict(item) for item in todo], override_num_blocks=min(len(todo), 200))
    labelled = items.map_batches(
        _RayLabeler,
        fn_constructor_kwargs={"task": task, "device": "cuda" if gpus else device, "threads": cpus},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    for row in labelled.iter_rows():
        yield json.loads(row["record"])
