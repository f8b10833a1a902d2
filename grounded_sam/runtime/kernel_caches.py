"""Torch's CPU kernel caches, bounded, so a server that sees many input shapes stays small.

On a CPU, torch runs bf16 matmuls and convolutions through oneDNN and keeps the kernels it builds for
each input shape in two caches, 1024 entries each by default:
- oneDNN's primitive cache, one for the process. A hit there spares building (compiling) a kernel again.
- ideep's (torch's oneDNN layer), one in each thread that ran a model, in front of oneDNN's. ComfyUI runs
  every prompt on one thread that lives as long as the server, so its cache does too.

Freeing a model, ``/free`` or "Unload models" leaves both. Every new image size or prompt length builds
new kernels: in bf16 on a CPU with native bf16, a process running a reduced Grounding DINO and SAM ViT-B
grew by 542 MiB over 70 image sizes and prompt lengths, its models loaded all along. So oneDNN's is
bounded to 256 kernels, which a frame of the full-size models fits in, and ideep's to 8: it only spares
a lookup in oneDNN's, and a full-size frame took the same time with 8 as with 256 (see the README).

Both sizes are read from the environment once, when torch builds its first such kernel, so this runs
before any model does: the ComfyUI pack calls it when ComfyUI loads it, the command line when it starts.
A size already set in the environment is the user's and is kept.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 256  # oneDNN's primitive cache, for the process
THREAD_KERNEL_CACHE_ENTRIES = 8  # ideep's, in each thread (0 crashes torch: it needs at least one)
# oneDNN's cache's variable, then ideep's, each with the older name oneDNN also reads (a size set under it is the user's too).
_VARIABLES = (("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"), ("LRU_CACHE_CAPACITY", None))
# Every variable that sizes one of them: what a run with torch's own sizes must leave unset.
KERNEL_CACHE_VARIABLES = tuple(name for pair in _VARIABLES for name in pair if name)


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES, per_thread: int = THREAD_KERNEL_CACHE_ENTRIES) -> dict[str, str]:
    """Bound oneDNN's cache to ``entries`` kernels and ideep's to ``per_thread`` in each thread, unless the
    environment sizes one; returns the sizes set by name."""
    if entries < 0 or per_thread < 1:
        raise ValueError(f"oneDNN's cache holds 0 or more kernels and ideep's 1 or more, not {entries} and {per_thread}")
    for (name, older), size in zip(_VARIABLES, (entries, per_thread), strict=True):
        if name not in os.environ and (older is None or older not in os.environ):
            os.environ[name] = str(size)
    return {name: os.environ[name] for name, _ in _VARIABLES if name in os.environ}
