"""Where the models run and in what precision, chosen the same way for the CLI, Python and ComfyUI.

The choices are pure functions of what the machine offers (``Accelerators``), so the rules for
CUDA and MPS are tested on any machine; only ``accelerators()`` asks torch. Importing this
module does not import torch (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES_HELP = "auto, cpu, cuda, cuda:N or mps"
# "auto" first: the default. bf16/fp16 run both models under autocast; fp32 is exact.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
# bf16 matmuls are fast from Ampere (compute capability 8.0) on; older GPUs emulate them.
BF16_MIN_CUDA_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Accelerators:
    """What this machine offers besides its CPU."""

    cuda_devices: int = 0
    cuda_capability: tuple[int, int] | None = None  # of the first CUDA device
    mps: bool = False
    cpu_bf16: bool = False  # the CPU multiplies bf16 natively (AVX512-BF16 or AMX)


def accelerators() -> Accelerators:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    capability = torch.cuda.get_device_capability(0) if count else None
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return Accelerators(count, capability, bool(mps), _cpu_has_bf16())


@functools.cache
def _cpu_has_bf16() -> bool:
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def choose_device(requested: str, available: Accelerators) -> str:
    """``auto`` is CUDA, then MPS, then the CPU; an explicit device must exist here, else a clear error."""
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if available.cuda_devices:
            return "cuda:0"
        return "mps" if available.mps else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not available.mps:
            raise InputError("device 'mps' is not available here (it needs Apple silicon and a torch built with MPS): use --device auto or cpu")
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise InputError(f"unknown device {requested!r}: use {DEVICE_CHOICES_HELP}")
    index = int(match.group(1) or 0)
    if available.cuda_devices == 0:
        raise InputError(f"device {requested!r} is not available: this torch sees no CUDA GPU (use --device auto or cpu)")
    if index >= available.cuda_devices:
        raise InputError(f"device {requested!r} does not exist: this machine has CUDA devices 0..{available.cuda_devices - 1}")
    return f"cuda:{index}"


def choose_precision(requested: str, device_type: str, available: Accelerators) -> str:
    """The precision to run in: ``auto`` is bf16 where the device runs it fast (CUDA >= 8.0), else fp32.

    fp16 on a CPU is mapped to fp32 with a warning: CPUs have no fast fp16 matmul (5x slower
    than fp32 on our test machine), so nobody asking for speed wants it there. So is bf16 on a
    CPU without native bf16: torch emulates it there (on a 2-core AVX2 EPYC, 7.7x slower than fp32
    with small test models, 20-35x with SAM-HQ, whose transposed convolutions fall to a naive kernel).
    """
    name = (requested or "auto").strip().lower()
    if name not in PRECISION_CHOICES:
        raise InputError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    if name == "auto":
        capability = available.cuda_capability
        fast_bf16 = device_type == "cuda" and capability is not None and capability >= BF16_MIN_CUDA_CAPABILITY
        return "bf16" if fast_bf16 else "fp32"
    if name == "fp16" and device_type == "cpu":
        warnings.warn("fp16 on a CPU is several times slower than fp32: running in fp32 instead", stacklevel=3)
        return "fp32"
    if name == "bf16" and device_type == "cpu" and not available.cpu_bf16:
        warnings.warn("this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is several times slower than fp32: "
                      "running in fp32 instead", stacklevel=3)  # fmt: skip
        return "fp32"
    return name


def frees_into_host_heap(device_type: str) -> bool:
    """Whether a model on this device frees its tensors into the C library's heap, which keeps the pages.

    On a CPU, each frame's freed tensors go back to glibc, which keeps the pages that lie between live
    ones, so a loop of frames climbs in RSS while what is live stays flat; a caller trims the heap after
    each frame there (``freed_memory.trim_freed_heap``). CUDA's and MPS's allocators keep their own pools.
    """
    return device_type == "cpu"


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """A torch device for a ``--device`` value (or a torch.device, passed through)."""
    import torch

    if isinstance(requested, torch.device):
        return requested
    return torch.device(choose_device(requested or "auto", accelerators()))
