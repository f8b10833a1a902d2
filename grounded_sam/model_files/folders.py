"""Where model files live: the same folder names as ComfyUI (``sams``, ``grounding-dino``), so a
ComfyUI ``models`` folder works from the CLI too."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelNotFoundError
from .downloads import check_known_size, download, download_repo
from .registry import (
    DINO_FOLDER,
    KNOWN_MODELS,
    KNOWN_REPOS,
    SAM3_FOLDER,
    SAM_FOLDER,
    VITMATTE_FOLDER,
    KnownModel,
    known_model,
    known_repo,
)

__all__ = [
    "DINO_FOLDER", "KNOWN_MODELS", "KNOWN_REPOS", "SAM3_FOLDER", "SAM_FOLDER", "VITMATTE_FOLDER", "KnownModel", "known_model", "searched_folders",
]  # fmt: skip

MODELS_DIR_ENV = "GROUNDED_SAM_MODELS_DIR"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


def searched_folders(folder: str) -> list[str]:
    """The model folders a loader looks in: its own, then SAM 3's (SAM 3 fills either socket)."""
    return [folder, SAM3_FOLDER] if folder in (SAM_FOLDER, DINO_FOLDER) else [folder]


def default_models_dir() -> Path | None:
    value = os.environ.get(MODELS_DIR_ENV)
    return Path(value).expanduser() if value else None


def models_on_disk(folders: list[Path]) -> list[str]:
    """Weight files and transformers model folders (those with a config.json), by name."""
    names: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith("."):
                continue  # our own in-progress downloads
            if entry.is_file() and entry.suffix in WEIGHT_SUFFIXES or entry.is_dir() and (entry / "config.json").is_file():
                names.add(entry.name)
    return sorted(names)


def is_known(name: str | Path) -> bool:
    """A model we know where to download from (a registry file or a transformers repo)."""
    return known_model(str(name)) is not None or known_repo(str(name)) is not None


def resolve_model(
    name: str | Path,
    folder: str,
    search_dirs: list[Path],
    allow_download: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """A path for ``name``: an existing path, a file in ``search_dirs``, or a known model (downloaded if allowed)."""
    direct = Path(name).expanduser()
    where = search_dirs[0] if search_dirs else Path("models") / folder  # where a missing model goes
    repo = None if direct.exists() else known_repo(str(name))
    if repo is not None:
        for directory in search_dirs:
            if (directory / repo.dirname / "config.json").is_file():
                return directory / repo.dirname
        if allow_download:
            return download_repo(repo, where)
        raise ModelNotFoundError(f"model {repo.display_name!r} not found: put https://huggingface.co/{repo.repo_id} in {where / repo.dirname}")
    known = known_model(str(name))
    if direct.exists():
        check_known_size(direct, known)
        return direct
    filename = known.filename if known else Path(name).name
    for directory in search_dirs:
        candidate = directory / filename
        if candidate.exists():
            check_known_size(candidate, known)
            return candidate
    if known is None:
        raise ModelNotFoundError(f"model {str(name)!r} not found: put {filename} in {where}")
    if allow_download:
        return download(known, where, on_progress)
    raise ModelNotFoundError(f"model {str(name)!r} not found: put {filename} in {where}; download it from {known.url}")
