"""EdgeTAM's video memory: transformers' ``EdgeTamVideoModel``, its tracked objects run together (``object_batch``).

EdgeTAM already makes each object's memory from its own mask, so nothing else changes. It keeps memory in the
dtype it was made in and tells its memory attention how many memory frames come before the object pointers.
"""

from __future__ import annotations

from transformers import EdgeTamVideoModel

from .object_batch import ObjectBatching


class EdgeTamTracker(ObjectBatching, EdgeTamVideoModel):
    """``EdgeTamVideoModel`` whose objects tracked from memory on a frame go through it as one batch."""

    casts_memory = False
    counts_spatial_memories = True
