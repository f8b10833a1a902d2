"""Per-image results that a second prompt on the same image can reuse.

Keys are digests of the exact input bytes plus the device and dtype that produced the
result, so a changed image, a moved model or a new precision never hits a stale entry.
Each cache holds a few images only: memory stays bounded on long videos. A cache may be
shared by threads (a pipeline served by a threaded web server): lookups and inserts are
locked, the computation itself is not.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

Value = TypeVar("Value")


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous()
    if data.device.type != "cpu":
        data = data.cpu()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((tuple(data.shape), data.dtype)).encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.dtype != torch.uint8 else data.numpy().tobytes())
    return digest.hexdigest()


def result_key(inputs: tuple[torch.Tensor, ...], device: torch.device, dtype: torch.dtype, *extra: Hashable) -> tuple:
    """What decides a model's output besides its weights: the exact inputs, where and in what precision it runs."""
    return (*(tensor_digest(t) for t in inputs), device, dtype, autocast_dtype(device), *extra)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` right now, or None when it is off."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class LruCache(Generic[Value]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        with self._lock:
            found = self._entries.get(key, _MISSING)
            if found is not _MISSING:
                self.hits += 1
                self._entries.move_to_end(key)
                return found
            self.misses += 1
        value = compute()  # outside the lock: two threads on two images compute at once
        if self.capacity > 0:
            with self._lock:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_MISSING = object()


class BackboneCache:
    """Makes a module's ``forward`` remember its outputs for recently seen inputs.

    Used on Grounding DINO's image backbone (Swin + position embeddings): a new prompt on
    the same image then runs only the text and fusion parts. The forward is replaced on
    the instance, so parameter names (and checkpoints) are unchanged.
    """

    def __init__(self, module: torch.nn.Module, capacity: int = 2) -> None:
        self.cache: LruCache[object] = LruCache(capacity)
        self._compute = module.forward
        self._module = module
        module.forward = self.forward

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        param = next(self._module.parameters())
        key = result_key((pixel_values, pixel_mask), param.device, param.dtype)
        features, positions = self.cache.get_or_compute(key, lambda: self._compute(pixel_values, pixel_mask))
        # New lists each time: the caller (transformers' GroundingDinoModel) appends to them, and the cached
        # ones must stay as they were made.
        return list(features), list(positions)
