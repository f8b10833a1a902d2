"""Every call into ComfyUI lives here; without ComfyUI each has a plain fallback.

Keeping them in one module means the nodes and the library run (and are tested) outside
ComfyUI, and a ComfyUI API change touches one file.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

from ..errors import InputError
from ..model_files.folders import (
    DINO_FOLDER,
    KNOWN_MODELS,
    KNOWN_REPOS,
    SAM3_FOLDER,
    SAM_FOLDER,
    VITMATTE_FOLDER,
    WEIGHT_SUFFIXES,
    default_models_dir,
    models_on_disk,
    searched_folders,
)
from ..runtime.placement import ModelPlacement


def _comfy(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def in_comfyui() -> bool:
    return _comfy("folder_paths") is not None and _comfy("comfy.model_management") is not None


def register_model_folders() -> None:
    """Make ``models/sams``, ``models/grounding-dino``, ``models/sam3`` and ``models/vitmatte`` ComfyUI model folders
    (extra_model_paths.yaml can add more)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is None:
        return
    for name in (SAM_FOLDER, DINO_FOLDER, SAM3_FOLDER, VITMATTE_FOLDER):
        default = os.path.join(folder_paths.models_dir, name)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if default not in paths:
            paths = [*paths, default]
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | set(WEIGHT_SUFFIXES))


def model_search_dirs(folder: str) -> list[Path]:
    """Where a loader of ``folder`` looks: its ComfyUI folder's paths, then SAM 3's (see ``searched_folders``)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None:
        return [Path(p) for name in searched_folders(folder) for p in folder_paths.get_folder_paths(name)]
    base = default_models_dir() or Path("models")
    return [base / name for name in searched_folders(folder)]


def model_choices(folder: str) -> list[str]:
    """Files really on disk first, then the known models by their seed-pack names (fetched on first use)."""
    on_disk = models_on_disk(model_search_dirs(folder))
    known = [m.display_name for m in KNOWN_MODELS if m.folder == folder]
    known += [r.display_name for r in KNOWN_REPOS if r.folder == folder and r.dirname not in on_disk]
    return on_disk + [name for name in known if name not in on_disk]


class _PatchedModel(torch.nn.Module):
    """What a ComfyUI ``ModelPatcher`` holds for one of our models.

    The patcher writes bookkeeping attributes on the module it holds (``device``,
    ``model_loaded_weight_memory``, ...); a transformers model's ``device`` is a read-only
    property, so handing it over directly fails. This plain module owns the model as a child,
    so ComfyUI moves every weight with ``.to()`` and our wrappers read the device from them.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model


def load_for_inference(*wrappers: ModelPlacement) -> None:
    """Hand models to ComfyUI's model management: it moves them to its torch device now and offloads them later.

    Loaded whole (``force_full_load``): ComfyUI's partial loading only suits its own layer
    types, and a model split across devices could not run.
    """
    mm = _comfy("comfy.model_management")
    patcher_module = _comfy("comfy.model_patcher")
    if mm is None or patcher_module is None:
        return
    patchers = []
    for wrapper in wrappers:
        patcher = getattr(wrapper, "_comfy_patcher", None)
        if patcher is None:
            patcher = patcher_module.ModelPatcher(
                _PatchedModel(wrapper.module()), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
            )
            patcher.add_callback(_comfy("comfy.patcher_extension").CallbacksMP.ON_DETACH, _clear_caches_when_unloaded(wrapper))
            wrapper._comfy_patcher = patcher
        patchers.append(patcher)
    mm.load_models_gpu(patchers, force_full_load=True)


def _clear_caches_when_unloaded(wrapper: ModelPlacement) -> Callable[..., None]:
    """When ComfyUI unloads the model (/free, memory pressure) its cached results go too: they may sit on the GPU.

    ComfyUI also detaches a loaded model just to load it again (``unpatch_all=False``) on every
    run; the caches stay then, or a second prompt would redo the image work. The callback holds the
    wrapper weakly: the wrapper holds the patcher, which holds the callback, and a strong reference
    back would keep the model alive until the cyclic garbage collector happened to run.
    """
    held = weakref.ref(wrapper)

    def on_detach(_patcher, unpatch_all: bool = True) -> None:
        target = held()
        if unpatch_all and target is not None:
            target.clear_caches()

    return on_detach


@contextlib.contextmanager
def library_numerics() -> Iterator[None]:
    """Run our models with torch's own numeric settings, as the library runs them outside ComfyUI.

    ComfyUI (0.3.75 and 0.33, ``comfy/model_management.py``) turns on fp16/bf16 reductions in torch's math
    attention kernel for the whole process when it starts. That changes half-precision masks: a bf16
    MobileSAM case came out at mask IoU 0.992 against the library's. The setting is restored afterwards;
    ComfyUI runs one prompt at a time, so nothing else runs meanwhile.
    """
    cuda = torch.backends.cuda
    before = cuda.fp16_bf16_reduction_math_sdp_allowed()
    cuda.allow_fp16_bf16_reduction_math_sdp(False)
    try:
        yield
    finally:
        cuda.allow_fp16_bf16_reduction_math_sdp(before)


def progress_reporter(total: int) -> Callable[[int, int], None] | None:
    utils = _comfy("comfy.utils")
    if utils is None:
        return None
    bar = utils.ProgressBar(total)
    return lambda done, total_: bar.update_absolute(done, total_)


def cancel_check() -> Callable[[], None] | None:
    mm = _comfy("comfy.model_management")
    return mm.throw_exception_if_processing_interrupted if mm is not None else None


def video_source(video) -> tuple[object, int | None, tuple[float, float]]:
    """A core ``VIDEO`` (``LoadVideo``'s) as what PyAV opens a frame at a time, without decoding it all:
    (a path or a file object, the frame count when the video knows it, its trim window in seconds)."""
    if not hasattr(video, "get_stream_source"):
        raise InputError(f"video is a {type(video).__name__}, not ComfyUI's VIDEO: connect a 'Load Video' node")
    source = video.get_stream_source()
    try:
        count = int(video.get_frame_count())
    except Exception:  # noqa: BLE001 - a count is only for the progress bar
        count = None
    window = video.get_active_trim_window() if hasattr(video, "get_active_trim_window") else (0.0, 0.0)
    return source, count, (float(window[0]), float(window[1]))
