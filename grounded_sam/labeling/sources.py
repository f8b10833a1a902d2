"""The images of a labelling job: from folders, glob patterns and text files of paths.

Every image gets a stable id (its 1-based place in the whole list) and a ``file_name`` (its
path below the inputs' common folder). Both are the same in every shard and every re-run of a
job, so results from anywhere can be resumed, merged and matched against ground truth.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..media.inputs import IMAGE_SUFFIXES

LIST_SUFFIXES = frozenset({".txt", ".lst"})


@dataclass(frozen=True)
class ImageItem:
    id: int  # 1-based place in the job's full list: the COCO image id
    path: str  # where to read it
    file_name: str  # posix path below the inputs' common folder: the key for resume, merge and eval


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _paths_in_list(list_file: Path) -> list[Path]:
    """One path a line; relative paths are relative to the list's folder; blank lines and # comments skipped."""
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line).expanduser()
            paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def _expand(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _paths_in_list(path)
    if glob.has_magic(source):
        return sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if _is_image(Path(p)))
    return [path]  # a single image; if it is missing or bad, that is recorded for it, not fatal


def list_images(sources: list[str | Path]) -> list[ImageItem]:
    """Every image named by ``sources``, in the order given, each once."""
    paths: list[Path] = []
    empty = []
    for source in sources:
        found = _expand(str(source))
        if not found:
            empty.append(str(source))
        paths.extend(found)
    if empty:
        raise InputError("no images in: " + ", ".join(empty) + f" (images are files ending in {', '.join(sorted(IMAGE_SUFFIXES))})")
    unique, seen = [], set()
    for path in paths:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    folders = [os.path.dirname(os.path.abspath(p)) for p in unique]
    try:
        base = os.path.commonpath(folders)
    except ValueError:  # different drives (Windows)
        base = ""
    return [
        ImageItem(i + 1, str(p), Path(os.path.relpath(os.path.abspath(p), base)).as_posix() if base else p.name)
        for i, p in enumerate(unique)
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0 <= i < N) as (i, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text}: need N >= 1 and 0 <= i < N")
    return index, count


def take_shard(items: list[ImageItem], index: int, count: int) -> list[ImageItem]:
    """Every N-th image from the i-th: shards of one job are disjoint, cover it, and are balanced."""
    return items[index::count]
