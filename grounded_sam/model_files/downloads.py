"""Fetch a known model file once, verified, and never leave a partial file under its real name."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import ModelFileError, ModelNotFoundError
from .registry import KnownModel, KnownRepo

CHUNK = 1 << 20
TIMEOUT_SECONDS = 30.0  # per network operation: a dead connection fails instead of hanging


def offline() -> bool:
    """True when the user said there is no network (the hub's own switch, or ours)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "GROUNDED_SAM_OFFLINE"))


def where_to_get(model: KnownModel, folder: Path) -> str:
    size = f" ({model.size / 1e6:.0f} MB)" if model.size else ""
    return f"put {model.filename}{size} in {folder}; download it from {model.url}"


def download(model: KnownModel, folder: Path, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """``folder/model.filename``, downloaded and verified if it is not there yet."""
    target = folder / model.filename
    if target.is_file():
        return target
    if offline():
        raise ModelNotFoundError(f"{model.filename} is missing and downloads are off (offline mode): {where_to_get(model, folder)}")
    if model.hub_lfs and model.sha256 is None:
        model = replace(model, **_hub_lfs_digest(model, folder))
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{model.filename}.{uuid.uuid4().hex}.part"
    try:
        digests = _fetch(model, partial, on_progress)
        _verify(model, partial, digests)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _hub_lfs_digest(model: KnownModel, folder: Path) -> dict:
    """The sha256 and size the hub lists for a large file (its LFS object), to check the download against."""
    from huggingface_hub import get_hf_file_metadata

    try:
        meta = get_hf_file_metadata(model.url, timeout=TIMEOUT_SECONDS)
    except Exception as err:  # the hub client raises many types (HTTP, offline, timeouts)
        raise ModelNotFoundError(f"could not reach {model.url} ({type(err).__name__}: {err}); {where_to_get(model, folder)}") from err
    if not re.fullmatch(r"[0-9a-f]{64}", meta.etag or ""):
        raise ModelFileError(f"the hub lists no sha256 for {model.url}, so a download could not be checked; {where_to_get(model, folder)}")
    return {"sha256": meta.etag, "size": meta.size}


def _fetch(model: KnownModel, partial: Path, on_progress: Callable[[int, int], None] | None) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    request = urllib.request.Request(model.url, headers={"User-Agent": "grounded-sam"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or model.size or 0)
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                sha256.update(chunk)
                md5.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, short reads
        reason = getattr(err, "reason", err)
        raise ModelNotFoundError(f"could not download {model.filename} ({reason}); {where_to_get(model, partial.parent)}") from err
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _verify(model: KnownModel, partial: Path, digests: dict[str, str]) -> None:
    size = partial.stat().st_size
    problems = []
    if model.size is not None and size != model.size:
        problems.append(f"{size} bytes instead of {model.size}")
    for name in ("sha256", "md5"):
        expected = getattr(model, name)
        if expected is not None and digests[name] != expected:
            problems.append(f"{name} {digests[name]} instead of {expected}")
    if problems:
        raise ModelFileError(f"the download of {model.filename} from {model.url} is corrupt ({'; '.join(problems)}); it was discarded, try again")


def check_known_size(path: Path, model: KnownModel | None) -> None:
    """A cheap guard against a half-downloaded file that another tool left under the real name."""
    if model is None or model.size is None or not path.is_file() or path.name != model.filename:
        return
    size = path.stat().st_size
    if size != model.size:
        raise ModelFileError(
            f"{path} has {size} bytes but {model.filename} has {model.size}: it is incomplete or a different file; "
            f"delete it and download it again from {model.url}"
        )


# Only what loading needs: config, safetensors weights, tokenizer files (never pickles).
REPO_FILES = ["*.json", "*.safetensors", "*.txt"]


def download_repo(repo: KnownRepo, folder: Path) -> Path:
    """``folder/repo.dirname`` holding the transformers model, fetched through huggingface_hub if missing.

    huggingface_hub checks each file against the hub's hashes and writes it under a temporary
    name first, so an interrupted fetch never leaves a half file under the real name.
    """
    target = folder / repo.dirname
    if (target / "config.json").is_file():
        return target
    hint = f"put the files of https://huggingface.co/{repo.repo_id} (config.json, *.safetensors, tokenizer files) in {target}"
    if offline():
        raise ModelNotFoundError(f"{repo.display_name} is missing and downloads are off (offline mode): {hint}")
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo.repo_id, local_dir=target, allow_patterns=REPO_FILES)
    except Exception as err:  # the hub client raises many types (HTTP, offline, repo not found)
        raise ModelNotFoundError(f"could not download {repo.repo_id} ({type(err).__name__}: {err}); {hint}") from err
    if not (target / "config.json").is_file():
        raise ModelNotFoundError(f"{repo.repo_id} downloaded without a config.json; {hint}")
    return target
