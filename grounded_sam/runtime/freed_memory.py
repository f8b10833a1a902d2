"""Memory a freed model leaves in the process, given back to the system.

A model's weights go back to glibc when the model is freed, and glibc keeps them in its heaps for
reuse, so the process still shows them as resident; transformers keeps some results for the process
too. A host that frees models (the ComfyUI pack when ComfyUI lets go of one, a library user who drops
one) calls ``release_freed_memory`` to hand it all back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

from .transformers_caches import clear_transformers_caches


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
    trim_freed_heap()
    _trim_pending = _TRIM is not None


_trim_pending = False


def trim_freed_heap() -> None:
    """Hand glibc's free heap pages back to the system now, emptying no cache.

    For a loop whose every step frees large tensors and allocates others of other sizes (tracking a clip,
    or segmenting frames one after another, on a CPU): glibc keeps each step's freed pages resident between live ones, so RSS climbs with the
    clip although what is live stays flat. Measured with a reduced SAM 3 tracking the shared clip
    (``bench/track_memory.py --family sam3``): live heap flat at 1.49-1.50 GB from frame 26 on, RSS 3.39 GB
    at frame 30 and 3.72 GB at 90, still rising; trimmed after every frame, RSS stayed at 2.90-2.91 GB
    from frame 30 to 120, and a trim took 16-54 ms of a 10 s frame.
    Where the C library is not glibc this does nothing.
    """
    if _TRIM is not None:
        _TRIM(0)


def _trim_after_collection(phase: str, info: dict) -> None:
    """A ``gc.callbacks`` hook: the trim asked for during a collection, once it has freed what it found."""
    global _trim_pending
    if phase == "stop" and _trim_pending:
        _trim_pending = False
        _TRIM(0)


gc.callbacks.append(_trim_after_collection)
