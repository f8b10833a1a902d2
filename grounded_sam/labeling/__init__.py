"""Label a whole dataset: per-image results streamed to disk, resumable, exported to COCO and YOLO.

Names are imported on first use, so the command line's parser stays free of torch.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = {
    "label_dataset": "runner",
    "LabelSummary": "runner",
    "merge_shards": "merge",
    "evaluate": "evaluation",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
