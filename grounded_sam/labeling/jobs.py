"""What a labelling job is: the prompt, the settings and the exact model files, as plain data.

It is written to the job's folder (``job.json``) and shipped to every worker, so a re-run, a
shard or a Ray actor labels with exactly the same job, and a changed job is noticed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..prompts import Prompt
from ..settings import DetectionSettings


def model_digest(path: str | Path) -> str:
    """sha256 of a model file, or of a model folder's files (names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def coco_categories(names: list[str]) -> list[dict[str, Any]]:
    """COCO categories: one per prompt phrase, ids from 1 in prompt order."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]


@dataclass(frozen=True)
class LabelTask:
    """Everything a worker needs to label an image the same way as every other worker."""

    dino_path: str
    sam_path: str
    prompt: str
    exclude: str = ""
    settings: DetectionSettings = field(default_factory=DetectionSettings)
    precision: str = "auto"

    def __post_init__(self) -> None:
        Prompt.parse(self.prompt, self.exclude)  # a bad prompt fails here, before any model loads

    def categories(self) -> list[dict[str, Any]]:
        return coco_categories(list(Prompt.parse(self.prompt).kept))

    def description(self, effective_precision: str, shard: str | None) -> dict[str, Any]:
        """``job.json``: what must be equal for two runs' results to belong together."""
        return {
            "prompt": self.prompt,
            "exclude": self.exclude,
            "categories": [c["name"] for c in self.categories()],
            "settings": asdict(self.settings),
            "precision": effective_precision,
            "dino": {"file": Path(self.dino_path).name, "sha256": model_digest(self.dino_path)},
            "sam": {"file": Path(self.sam_path).name, "sha256": model_digest(self.sam_path)},
            "shard": shard,
        }
