"""Read model weights without ever running code from the file.

Only safetensors and ``torch.load(weights_only=True)`` are used; a pickle that needs
arbitrary classes is refused, never executed.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from ..errors import ModelFileError, ModelNotFoundError

Model = TypeVar("Model", bound=torch.nn.Module)

_WRAPPER_KEYS = ("model", "state_dict", "module")


def preferred_weights_file(path: str | Path) -> Path:
    """The file to read for ``path``: its ``.safetensors`` twin when one sits beside it."""
    path = Path(path)
    twin = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors" and twin.is_file():
        return twin
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a checkpoint, unwrapped from training containers."""
    path = preferred_weights_file(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes): the download failed; delete it and download it again")
    if path.suffix == ".safetensors":
        raw = _read_safetensors(path)
    else:
        raw = _read_torch_pickle(path)
    state = _unwrap(raw, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{path} is not a readable safetensors file ({err}); it is probably truncated or corrupt: download it again"
        ) from err


# How a legacy (pre-zip, torch < 1.6) ``torch.save`` file begins: pickle protocol 2, then torch's magic number.
_LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _read_torch_pickle(path: Path) -> object:
    # mmap reads only the zip format; legacy files are read whole; anything else is not a torch file at all.
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with path.open("rb") as file:
            if file.read(len(_LEGACY_TORCH_HEADER)) != _LEGACY_TORCH_HEADER:
                raise ModelFileError(
                    f"{path} is not a PyTorch checkpoint (neither the zip nor the legacy torch.save format); "
                    "it is probably truncated or not a model file: download it again"
                )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise ModelFileError(
                f"{path} stores Python objects that would have to run code to load; refusing it for safety. "
                "Use the official release of this model (or its .safetensors version) instead."
            ) from err
        raise ModelFileError(f"{path} is not a PyTorch checkpoint ({err}): download it again") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {err}); "
            "it is probably truncated or not a model file: download it again"
        ) from err


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, dict):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, dict):
        raise ModelFileError(f"{path} holds a {type(raw).__name__}, not a dict of weights")
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path} contains no weight tensors")
    return tensors


def missing_and_unexpected(expected: set[str], given: set[str], path: Path, what: str) -> None:
    """Raise with the offending names when a converted state dict does not fit its model exactly."""
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:

        def show(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
        raise ModelFileError(f"{path} does not fit the {what} architecture: " + "; ".join(parts))


def without_initial_values(build: Callable[[], Model]) -> Model:
    """The model ``build`` makes, without drawing random initial weights: every weight is loaded right after
    (``load_exact`` refuses a file that lacks one), and drawing them was most of a load's time (SAM 3: 8 s of
    8.3 s). Buffers the constructors compute (rotary tables, position ids) are made as usual, and tied
    weights are tied as usual. transformers' own ``from_pretrained`` builds the same way: like it, this
    switches torch's init functions off process-wide while ``build`` runs.
    """
    from transformers import PreTrainedModel
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = build()
    if isinstance(model, PreTrainedModel):
        model.tie_weights()
    return model


def require_complete(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """A cut file (an interrupted download) said plainly, before ``load_exact`` would list it as a misfit."""
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ModelFileError(f"{path} is incomplete: {len(missing)} {what} tensors are missing ({', '.join(missing[:4])}, ...); download it again")


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str, assign: bool = False) -> None:
    """Load ``state`` into ``model`` strictly: every name and every shape must match.

    ``assign``: the model's tensors become ``state``'s (for a model built on the meta device).
    """
    own = model.state_dict()
    missing_and_unexpected(set(own), set(state), path, what)
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ModelFileError(f"{path} does not fit the {what} architecture: wrong shapes for " + "; ".join(wrong[:5]))
    model.load_state_dict(state, strict=True, assign=assign)


def load_complete_folder(model_class: type, path: Path, what: str) -> torch.nn.Module:
    """``model_class`` from a transformers folder (safetensors only, float32), refusing one with tensors
    missing: transformers would fill them with random values."""
    try:
        model, info = model_class.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True
        )
    except OSError as err:
        raise ModelFileError(f"cannot load the {what} model in {path}: {err}") from err
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelFileError(f"{path} is an incomplete {what} model: {len(missing)} tensor(s) missing, e.g. {missing[0]} (download it again)")
    return model


def first_rename(key: str, renames: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    """``key`` under the first (pattern, replacement) that matches it; unchanged when none does."""
    for pattern, repl in renames:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key
