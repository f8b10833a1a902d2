"""The models the loader nodes have loaded and ComfyUI still holds.

A second loader node on the same file gets the same model, and nothing is kept beyond what
ComfyUI keeps: once its cache lets go of a loader's output (another model chosen, ``/free``,
"Unload models"), the model is freed, and the memory it used goes back to the system. A file is
known by its path and the size, modification time and inode of every file it is made of, so a file
replaced in place, or a file replaced inside a model folder, is loaded anew.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..runtime.freed_memory import release_freed_memory

Model = TypeVar("Model")

_in_use: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def file_identity(path: Path) -> tuple:
    """What changes when the model on disk changes: every file's name, size, modification time and inode."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamps = []
    for file in files:
        stat = file.stat()
        stamps.append((file.relative_to(path).as_posix() if path.is_dir() else "", stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return (str(path), tuple(stamps))


def shared_model(kind: str, path: Path, load: Callable[[Path], Model]) -> Model:
    """The ``kind`` model loaded from ``path`` that ComfyUI still holds, or a new one from ``load(path)``."""
    key = (kind, file_identity(path))
    with _lock:
        model = _in_use.get(key)
    if model is None:
        model = load(path)  # outside the lock: a big file takes seconds, other loaders need not wait
        with _lock:
            shared = _in_use.setdefault(key, model)
        if shared is model:
            weakref.finalize(model, release_freed_memory)
        model = shared
    return model  # type: ignore[return-value]
