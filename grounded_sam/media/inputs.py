"""Image paths from a command line, checked before any model loads, each with an output name of its own.

Two inputs never share an output name: outputs keep the inputs' folder layout below their
common folder (``a/img.jpg`` and ``b/img.jpg`` give ``a/img_mask.png`` and ``b/img_mask.png``),
and two files with one stem in one folder keep their extension (``img_jpg``, ``img_png``).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class ImageInput:
    path: Path  # as the user gave it (or found in a folder they gave)
    output_stem: PurePosixPath  # relative to the output folder, no suffix: "a/img"
    problem: str | None = None  # why it cannot be read; reported and skipped, never fatal for the others


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _problem(path: Path) -> str | None:
    """Cheap checks (the file's header only): missing, a folder without images, not an image."""
    if not path.exists():
        return f"image file not found: {path}"
    if path.is_dir():
        return f"{path} is a folder with no images in it ({', '.join(sorted(IMAGE_SUFFIXES))})"
    if not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied"
    if path.stat().st_size == 0:
        return f"{path} is an empty file (0 bytes), not an image"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except UnidentifiedImageError:
        return f"{path} is not an image file PIL can read (JPEG, PNG, WebP, ...)"
    except OSError as err:
        return f"cannot read image {path}: {err}"
    return None


def expand_images(arguments: list[Path]) -> tuple[list[ImageInput], list[str]]:
    """The images to process, in the order given (a folder's images sorted), and notes on duplicates.

    Missing or unreadable inputs stay in the list with their ``problem`` so every result
    file still accounts for them.
    """
    paths: list[Path] = []
    for argument in arguments:
        found = _images_in(argument) if argument.is_dir() else []
        paths.extend(found or [argument])
    notes, unique, seen = [], [], set()
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            notes.append(f"{path} is given more than once: processed once")
            continue
        seen.add(key)
        unique.append(path)
    stems = output_stems(unique)
    return [ImageInput(p, stem, _problem(p)) for p, stem in zip(unique, stems, strict=True)], notes


def output_stems(paths: list[Path]) -> list[PurePosixPath]:
    """A distinct relative name (no suffix) per path: its place below the inputs' common folder."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    try:
        base = os.path.commonpath(folders) if folders else ""
    except ValueError:  # different drives (Windows): keep each file's own folder name
        base = ""
    relative = [PurePosixPath(Path(os.path.relpath(f, base)).as_posix() if base else Path(f).name) for f in folders]
    stems = [folder / Path(p).stem for folder, p in zip(relative, paths, strict=True)]
    taken: dict[PurePosixPath, int] = {}
    for stem in stems:
        taken[stem] = taken.get(stem, 0) + 1
    # same stem in one folder (img.jpg, img.png): keep the extension in the name
    named = [
        PurePosixPath(posixpath.normpath(str(s.parent / f"{s.name}_{Path(p).suffix.lstrip('.')}" if taken[s] > 1 else s)))
        for s, p in zip(stems, paths, strict=True)
    ]
    result: list[PurePosixPath] = []
    used: set[PurePosixPath] = set()
    for stem in named:  # anything still shared (img.JPG and img.jpg) gets a counter
        unique, n = stem, 1
        while unique in used:
            n += 1
            unique = stem.with_name(f"{stem.name}_{n}")
        used.add(unique)
        result.append(unique)
    return result
