"""Label one image: read it, run the pipeline, and return its result line (or its error line).

The same object runs in the single-process loop and inside every Ray actor, so both give the
same lines. A bad image is an error line, never an exception: the run goes on.
"""

from __future__ import annotations

from typing import Any

from ..errors import GroundedSamError
from ..media.images import load_image_file
from ..pipeline import GroundedSam
from ..runtime.run_hooks import RunHooks
from .annotations import error_record, image_record
from .jobs import LabelTask
from .sources import ImageItem


def load_pipeline(task: LabelTask, device: str = "auto") -> GroundedSam:
    from ..loaders import load_grounding_dino, load_sam

    return GroundedSam(load_grounding_dino(task.dino_path, device), load_sam(task.sam_path, device), task.precision)


class ImageLabeler:
    def __init__(self, task: LabelTask, pipeline: GroundedSam) -> None:
        self.task = task
        self.pipeline = pipeline

    def __call__(self, item: ImageItem, hooks: RunHooks | None = None) -> dict[str, Any]:
        try:
            frame = load_image_file(item.path)
            found = self.pipeline.segment(frame, self.task.prompt, self.task.settings, hooks, self.task.exclude)
            return image_record(item, found)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - this image only; its error line says why
            message = str(err) if isinstance(err, GroundedSamError) else f"{type(err).__name__}: {err}"
            return error_record(item, message)
