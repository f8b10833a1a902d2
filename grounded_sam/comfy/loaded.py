"""The models the loader nodes have loaded and ComfyUI still holds.

A second loader node on the same file gets the same model, and nothing is kept beyond what
ComfyUI keeps: once its cache lets go of a loader's output (another model chosen, ``/free``,
"Unload models"), the model is freed, and the memory it used goes back to the system. A file is
known by its path and the size, modification time and inode of every file it is made of, so a file
replaced in place, or a file replaced inside a model folder, is loaded anew.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..transformers_caches import clear_transformers_caches

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


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the memory freed with a model back to the system.

    transformers' process-wide caches are emptied first (SAM 2 keeps a 64 MiB position embedding in one).
    Then glibc, which keeps freed memory in its heaps for reuse, so a process that freed a model still
    shows it as resident (measured: 1.55 GB resident after freeing models that took it from 0.91 to
    1.39 GB; 1.07 GB after this). A model in a reference cycle (ComfyUI's patcher holds one) is finalized
    before the collector frees its tensors, so the heaps are trimmed again once that collection ends: in
    the soak test's server that took RSS after ``/free`` from 1.14 to 1.06 of the start. Where the C
    library is not glibc this does nothing.
    """
    global _trim_pending
    clear_transformers_caches()
    if _TRIM is not None:
        _TRIM(0)
        _trim_pending = True


_trim_pending = False


def _trim_after_collection(phase: str, info: dict) -> None:
    """A ``gc.callbacks`` hook: the trim asked for during a collection, once it has freed what it found."""
    global _trim_pending
    if phase == "stop" and _trim_pending:
        _trim_pending = False
        _TRIM(0)


gc.callbacks.append(_trim_after_collection)
