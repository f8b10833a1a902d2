"""Where model files live and what the known ones are called.

The same folder names as ComfyUI (``sams``, ``grounding-dino``), so a ComfyUI ``models``
folder works from the CLI too. The display names are the seed pack's, which old workflows
store as widget values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFoundError

SAM_FOLDER = "sams"
DINO_FOLDER = "grounding-dino"
MODELS_DIR_ENV = "GROUNDED_SAM_MODELS_DIR"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


@dataclass(frozen=True)
class KnownModel:
    display_name: str
    folder: str
    filename: str
    url: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("sam_vit_h (2.56GB)", SAM_FOLDER, "sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
    KnownModel("sam_vit_l (1.25GB)", SAM_FOLDER, "sam_vit_l_0b3195.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    KnownModel("sam_vit_b (375MB)", SAM_FOLDER, "sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    KnownModel("sam_hq_vit_h (2.57GB)", SAM_FOLDER, "sam_hq_vit_h.pth", "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_h.pth"),
    KnownModel("sam_hq_vit_l (1.25GB)", SAM_FOLDER, "sam_hq_vit_l.pth", "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_l.pth"),
    KnownModel("sam_hq_vit_b (379MB)", SAM_FOLDER, "sam_hq_vit_b.pth", "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_b.pth"),
    KnownModel("mobile_sam(39MB)", SAM_FOLDER, "mobile_sam.pt", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
    KnownModel(
        "GroundingDINO_SwinT_OGC (694MB)",
        DINO_FOLDER,
        "groundingdino_swint_ogc.pth",
        "https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swint_ogc.pth",
    ),
    KnownModel(
        "GroundingDINO_SwinB (938MB)",
        DINO_FOLDER,
        "groundingdino_swinb_cogcoor.pth",
        "https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swinb_cogcoor.pth",
    ),
)


def known_model(name: str) -> KnownModel | None:
    return next((m for m in KNOWN_MODELS if name in (m.display_name, m.filename)), None)


def default_models_dir() -> Path | None:
    value = os.environ.get(MODELS_DIR_ENV)
    return Path(value).expanduser() if value else None


def models_on_disk(folders: list[Path]) -> list[str]:
    """Weight files and transformers model folders (those with a config.json), by name."""
    names: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_file() and entry.suffix in WEIGHT_SUFFIXES or entry.is_dir() and (entry / "config.json").is_file():
                names.add(entry.name)
    return sorted(names)


def resolve_model(name: str | Path, folder: str, search_dirs: list[Path]) -> Path:
    """A path for ``name``: an existing path, a file in one of ``search_dirs``, or a known model's file."""
    direct = Path(name).expanduser()
    if direct.exists():
        return direct
    known = known_model(str(name))
    filename = known.filename if known else Path(name).name
    for directory in search_dirs:
        candidate = directory / filename
        if candidate.exists():
            return candidate
    where = search_dirs[0] if search_dirs else Path("models") / folder
    hint = f"; download it from {known.url}" if known else ""
    raise ModelNotFoundError(f"model {str(name)!r} not found: put {filename} in {where}{hint}")
