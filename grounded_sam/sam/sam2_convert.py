"""Meta's SAM 2 / SAM 2.1 checkpoints (``sam2*_hiera_*.pt``): which release a file is, for transformers' ``Sam2Model``.

The size is read from the tensors (Hiera's width, its blocks per stage); the few settings no
tensor carries (heads, attention windows, global blocks) are those of Meta's release for that
size, so no config file is ever read. The tensors' new names are in ``grounded_sam/sam/sam2_names.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

import torch

from ..errors import ModelFileError

_TRUNK = "image_encoder.trunk."
_PATCH_PROBE = _TRUNK + "patch_embed.proj.weight"
_DECODER_PROBE = "sam_mask_decoder.iou_token.weight"
_SAM21_PROBE = "no_obj_embed_spatial"  # SAM 2.1 added it; SAM 2 has none

# Meta's four releases by (Hiera width, blocks per stage): heads in stage 1, global-attention
# blocks and window sizes per stage (sam2/configs/sam2.1/*.yaml and Hiera's defaults).
_RELEASES: dict[tuple[int, tuple[int, ...]], tuple[str, int, list[int], list[int]]] = {
    (96, (1, 2, 7, 2)): ("Hiera-T", 1, [5, 7, 9], [8, 4, 14, 7]),
    (96, (1, 2, 11, 2)): ("Hiera-S", 1, [7, 10, 13], [8, 4, 14, 7]),
    (112, (2, 3, 16, 3)): ("Hiera-B+", 2, [12, 16, 20], [8, 4, 14, 7]),
    (144, (2, 6, 36, 4)): ("Hiera-L", 2, [23, 33, 43], [8, 4, 16, 8]),
}

@dataclass(frozen=True)
class Sam2Architecture:
    version: str  # "2" or "2.1"
    size: str  # "Hiera-T", "Hiera-S", "Hiera-B+", "Hiera-L"
    backbone: dict  # Sam2HieraDetConfig kwargs

    @property
    def name(self) -> str:
        return f"SAM {self.version} {self.size}"


def is_meta_sam2(state: dict[str, torch.Tensor]) -> bool:
    return _PATCH_PROBE in state or _DECODER_PROBE in state


def detect_sam2_architecture(state: dict[str, torch.Tensor], source: str) -> Sam2Architecture:
    try:
        width = state[_PATCH_PROBE].shape[0]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"^image_encoder\.trunk\.blocks\.(\d+)\.", k)))
        # The first block of every later stage projects to the doubled width.
        starts = [0, *sorted(i for i in range(depth) if f"{_TRUNK}blocks.{i}.proj.weight" in state), depth]
        stages = tuple(b - a for a, b in pairwise(starts))
        background = list(state[_TRUNK + "pos_embed"].shape[-2:])
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{source} is incomplete: it has no SAM 2 {_missing(err)} (a partial download?)") from err
    release = _RELEASES.get((width, stages))
    if release is None:
        raise ModelFileError(
            f"{source} is a SAM 2 model of an unknown size (Hiera width {width}, blocks per stage {list(stages)}): "
            "only Meta's tiny, small, base_plus and large releases are supported"
        )
    size, heads, global_blocks, windows = release
    backbone = {
        "hidden_size": width,
        "num_attention_heads": heads,
        "blocks_per_stage": list(stages),
        "embed_dim_per_stage": [width << i for i in range(4)],
        "num_attention_heads_per_stage": [heads << i for i in range(4)],
        "window_size_per_stage": windows,
        "global_attention_blocks": global_blocks,
        "window_positional_embedding_background_size": background,
    }
    return Sam2Architecture("2.1" if _SAM21_PROBE in state else "2", size, backbone)


def release_size(width: int, stages: list[int] | tuple[int, ...]) -> str:
    """"Hiera-T" .. "Hiera-L" for Meta's releases, else "Hiera"."""
    release = _RELEASES.get((width, tuple(stages)))
    return release[0] if release else "Hiera"


def _missing(err: Exception) -> str:
    return f"tensor {err.args[0]!r}" if isinstance(err, KeyError) else "image encoder blocks"
