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
from transformers import Sam3Config, Sam3Model

from ..checkpoints import load_complete_folder, load_exact, read_state_dict
from ..errors import ModelFileError
from .convert import Sam3Architecture, detect_sam3_architecture, detector_state, rename_sam3_detector_keys
from .detector import Sam3Detector
from .text import clip_tokenizer

FOLDER_TYPES = ("sam3", "sam3_video")
_loaded: weakref.WeakValueDictionary[tuple, Sam3Detector] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def is_sam3_folder(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") in FOLDER_TYPES


def build_sam3_model(arch: Sam3Architecture) -> Sam3Model:
    """An uninitialised-weights SAM 3 image model of exactly the release file's size."""
    config = Sam3Config(
        vision_config={"backbone_config": {"model_type": "sam3_vit_model", **arch.vit}},
        text_config={"model_type": "clip_text_model", **arch.text},
        detr_encoder_config={"num_layers": arch.detr_encoder_layers},
        detr_decoder_config={"num_layers": arch.detr_decoder_layers, "num_queries": arch.num_queries},
        geometry_encoder_config={"num_layers": arch.geometry_layers},
    )
    return Sam3Model(config).eval()


def sam3_from_state(state: dict[str, torch.Tensor], source: Path) -> Sam3Detector:
    """SAM 3 from a release file's tensors (``detector.*``; the tracker's are not used for images)."""
    detector = detector_state(state)
    arch = detect_sam3_architecture(detector, str(source))
    model = build_sam3_model(arch)
    renamed = rename_sam3_detector_keys(detector)
    missing = sorted(set(model.state_dict()) - set(renamed))
    if missing:
        raise ModelFileError(
            f"{source} is incomplete: {len(missing)} SAM 3 tensors are missing ({', '.join(missing[:4])}, ...); download it again"
        )
    load_exact(model, renamed, source, arch.name)
    return Sam3Detector(model.float(), clip_tokenizer(), arch.name)


def sam3_from_folder(path: Path) -> Sam3Detector:
    model = load_complete_folder(Sam3Model, path, "SAM 3")
    return Sam3Detector(model.float().eval(), clip_tokenizer(path), "SAM 3")


def load_sam3(path: Path, state: dict[str, torch.Tensor] | None = None) -> Sam3Detector:
    """SAM 3 from a folder or a release file (``state``: its tensors, when the caller has read them).

    The SAM 3 already loaded from this exact file while it is still in use is returned again.
    """
    if path.is_dir():
        return _shared(path, sam3_from_folder)
    return _shared(path, lambda p: sam3_from_state(state if state is not None else read_state_dict(p), p))


def _shared(path: Path, load: Callable[[Path], Sam3Detector]) -> Sam3Detector:
    stat = (path / "config.json" if path.is_dir() else path).resolve().stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        found = _loaded.get(key)
        if found is None:
            found = load(path)
            _loaded[key] = found
        return found
