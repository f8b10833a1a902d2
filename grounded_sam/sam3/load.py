"""Build SAM 3 from Meta's ``sam3.pt`` or a transformers folder (``facebook/sam3``).

Both loaders (Grounding DINO's and SAM's) accept SAM 3; loading the same file twice while the
first is still in use gives the same model, so SAM 3 in both sockets costs one copy and one pass.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Sam3Config, Sam3Model, Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerVideoConfig

from ..model_files.checkpoints import (
    load_complete_folder,
    load_exact,
    read_state_dict,
    require_complete,
    without_initial_values,
)
from .convert import (
    Sam3Architecture,
    detect_sam3_architecture,
    detector_state,
    has_box_head,
    has_video_tracker,
    rename_sam3_box_head_keys,
    rename_sam3_detector_keys,
    rename_sam3_video_memory_keys,
)
from .detector import Sam3Detector
from .text import clip_tokenizer
from .tracker import Sam3Tracker

# where a transformers Sam3VideoModel keeps the tracker and its neck
VIDEO_TRACKER, VIDEO_TRACKER_NECK = "tracker_model.", "tracker_neck."
_loaded: weakref.WeakValueDictionary[tuple, Sam3Detector] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def build_sam3_model(arch: Sam3Architecture) -> Sam3Model:
    """An uninitialised-weights SAM 3 image model of exactly the release file's size."""
    config = Sam3Config(
        vision_config={"backbone_config": {"model_type": "sam3_vit_model", **arch.vit}},
        text_config={"model_type": "clip_text_model", **arch.text},
        detr_encoder_config={"num_layers": arch.detr_encoder_layers},
        detr_decoder_config={"num_layers": arch.detr_decoder_layers, "num_queries": arch.num_queries},
        geometry_encoder_config={"num_layers": arch.geometry_layers},
    )
    return without_initial_values(lambda: Sam3Model(config)).eval()


def build_sam3_box_head(model: Sam3Model) -> Sam3TrackerModel:
    """The tracker's box-to-mask head for ``model``, on the meta device and without a ViT of its own:
    it reads the detector's ViT output, so the big encoder is held and run once."""
    vit = model.config.vision_config.backbone_config
    grid = vit.image_size // vit.patch_size
    config = Sam3TrackerConfig(
        vision_config={**model.config.vision_config.to_dict(), "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]},
        prompt_encoder_config={"image_size": vit.image_size, "patch_size": vit.patch_size},
    )
    with torch.device("meta"):
        head = Sam3TrackerModel(config)
    head.vision_encoder.backbone = torch.nn.Identity()
    return head.eval()


def build_sam3_video_tracker(head: Sam3TrackerModel, memory_layers: int) -> Sam3Tracker:
    """SAM 3's video tracker for the box-to-mask ``head``, without initial values and without a vision encoder: it
    reads the detector's ViT output through the head's neck, so a frame's features serve detection and tracking.
    (Not on the meta device: the memory attention's rotary tables are buffers computed when it is built.)"""
    config = Sam3TrackerVideoConfig(
        vision_config=head.config.vision_config.to_dict(),
        prompt_encoder_config=head.config.prompt_encoder_config.to_dict(),
        mask_decoder_config=head.config.mask_decoder_config.to_dict(),
        memory_attention_num_layers=memory_layers,
    )
    config.image_size = head.config.vision_config.image_size  # also sets the feature and rotary sizes from the patch size
    return without_initial_values(lambda: Sam3Tracker(config, remove_vision_encoder=True)).eval()


def sam3_from_state(state: dict[str, torch.Tensor], source: Path) -> Sam3Detector:
    """SAM 3 from a release file's tensors: the detector (``detector.*``) and, when the file has
    the tracker (``tracker.*``), its box-to-mask head and its video memory (for tracking)."""
    detector = detector_state(state)
    arch = detect_sam3_architecture(detector, str(source))
    model = build_sam3_model(arch)
    renamed = rename_sam3_detector_keys(detector)
    require_complete(model, renamed, source, "SAM 3")
    load_exact(model, renamed, source, arch.name)
    box_head = _box_head(model, lambda _wanted: rename_sam3_box_head_keys(state), source, arch.name) if has_box_head(state) else None
    video = None
    if box_head is not None and has_video_tracker(state):
        memory = rename_sam3_video_memory_keys(state)
        video = _video_tracker(box_head, _memory_layers(memory), lambda _wanted: memory, source, arch.name)
    return Sam3Detector(model.float(), clip_tokenizer(), arch.name, box_head, video)


def sam3_from_folder(path: Path) -> Sam3Detector:
    """A transformers folder: ``sam3`` holds the detector only; ``sam3_video`` (the hub's ``facebook/sam3``)
    also holds the tracker, whose box-to-mask head is loaded beside the detector."""
    model = load_complete_folder(Sam3Model, path, "SAM 3").float().eval()
    is_video = json.loads((path / "config.json").read_text()).get("model_type") == "sam3_video"
    box_head = _box_head(model, lambda wanted: _video_folder_head_tensors(path, wanted), path, "SAM 3") if is_video else None
    video = None
    if box_head is not None:
        layers = json.loads((path / "config.json").read_text()).get("tracker_config", {}).get("memory_attention_num_layers", 4)
        video = _video_tracker(box_head, layers, lambda wanted: _video_folder_head_tensors(path, wanted), path, "SAM 3")
    return Sam3Detector(model, clip_tokenizer(path), "SAM 3", box_head, video)


def _box_head(model: Sam3Model, read: Callable[[set[str]], dict[str, torch.Tensor]], source: Path, name: str) -> Sam3TrackerModel:
    """The box-to-mask head for ``model``, its tensors from ``read(the names it needs)``, refused when any is missing."""
    head = build_sam3_box_head(model)
    state = read(set(head.state_dict()))
    require_complete(head, state, source, "SAM 3 box-to-mask head")
    load_exact(head, state, source, f"{name} box-to-mask head", assign=True)
    return head.float()


def _memory_layers(memory: dict[str, torch.Tensor]) -> int:
    """How many layers the file's memory attention has (4 in every release), read from its tensor names."""
    return len({name.split(".")[2] for name in memory if name.startswith("memory_attention.layers.")})


def _video_tracker(
    head: Sam3TrackerModel, memory_layers: int, read: Callable[[set[str]], dict[str, torch.Tensor]], source: Path, name: str
) -> Sam3Tracker:
    """The video tracker for ``head``: its prompt encoder and mask decoder are the head's own tensors (held once),
    its video memory from ``read(the names it needs)``, refused when any is missing."""
    video = build_sam3_video_tracker(head, memory_layers)
    shared = {k: v for k, v in head.state_dict(keep_vars=True).items() if not k.startswith("vision_encoder.")}
    wanted = set(video.state_dict()) - set(shared)
    state = {**read(wanted), **shared}
    require_complete(video, state, source, "SAM 3 video tracker")
    load_exact(video, state, source, f"{name} video tracker", assign=True)
    return video.float()


def _video_folder_head_tensors(path: Path, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The ``wanted`` tensors of a ``sam3_video`` folder's tracker, under transformers' tracker names (its neck is the
    model's ``tracker_neck``): the box-to-mask head's, or the video memory's.

    The hub's files name them ``tracker_model.*``; transformers' own ``save_pretrained`` of a
    ``Sam3VideoModel`` writes ``tracker_model.tracker_model.*``: both are read.
    """
    found: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                if name.startswith(VIDEO_TRACKER_NECK):
                    ours = "vision_encoder.neck." + name[len(VIDEO_TRACKER_NECK):]
                else:
                    ours = name.removeprefix(VIDEO_TRACKER).removeprefix(VIDEO_TRACKER)
                if name.startswith((VIDEO_TRACKER, VIDEO_TRACKER_NECK)) and ours in wanted:
                    found[ours] = weights.get_tensor(name)
    return found


def load_sam3(path: Path, state: dict[str, torch.Tensor] | None = None) -> Sam3Detector:
    """SAM 3 from a folder or a release file (``state``: its tensors, when the caller has read them).

    The SAM 3 already loaded from this exact file while it is still in use is returned again.
    """
    if path.is_dir():
        return _shared(path, sam3_from_folder)
    return _shared(path, lambda p: sam3_from_state(state if state is not None else read_state_dict(p), p))


def loaded_sam3(path: Path) -> Sam3Detector | None:
    """The SAM 3 already loaded from this exact file and still in use (the other loader's), without reading the file."""
    if not _marker(path).is_file():
        return None
    with _lock:
        return _loaded.get(_key(path))


def _marker(path: Path) -> Path:
    """The file whose identity stands for the model: the release file, or a folder's config."""
    return path / "config.json" if path.is_dir() else path


def _key(path: Path) -> tuple:
    stat = _marker(path).resolve().stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _shared(path: Path, load: Callable[[Path], Sam3Detector]) -> Sam3Detector:
    key = _key(path)
    with _lock:
        found = _loaded.get(key)
        if found is None:
            found = load(path)
            _loaded[key] = found
        return found
