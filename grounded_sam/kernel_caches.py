"""Torch's CPU kernel caches, bounded, so a server that sees many input shapes stays small.

On a CPU, torch runs bf16 matmuls and convolutions through oneDNN and keeps the kernels it builds for
each input shape in two process-wide caches: oneDNN's primitive cache and ideep's (torch's oneDNN
layer), 1024 entries each by default. Freeing a model, ``/free`` or "Unload models" leaves them. Every
new image size or prompt length builds new kernels: in bf16 on a CPU with native bf16, a process running
a reduced Grounding DINO and SAM ViT-B grew by 542 MiB over 70 image sizes and prompt lengths, its
models loaded all along. With 256 entries each it levelled off far lower (see the README), and a frame
of the full-size models still finds every kernel it needs in them, as fast as with 1024.

Both sizes are read from the environment once, when torch builds its first such kernel, so this runs
before any model does: the ComfyUI pack calls it when ComfyUI loads it, the command line when it starts.
A size already set in the environment is the user's and is kept.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 256
# Each cache's variable, with the older name oneDNN also reads (a size set under it is the user's too).
_SIZES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "DNNL_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY": None}
# Every variable that sizes one of them: what a run with torch's own sizes must leave unset.
KERNEL_CACHE_VARIABLES = tuple(name for pair in _SIZES.items() for name in pair if name)


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES) -> dict[str, str]:
    """Bound each cache to ``entries`` kernels unless the environment sizes it; returns the sizes set by name."""
    if entries < 0:
        raise ValueError(f"a cache holds 0 or more kernels, not {entries}")
    for name, older in _SIZES.items():
        if name not in os.environ and (older is None or older not in os.environ):
            os.environ[name] = str(entries)
    return {name: os.environ[name] for name in _SIZES if name in os.environ}
