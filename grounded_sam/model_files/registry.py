"""The model files users already have, by the names the seed pack gave them.

Old workflows store these display names as widget values, so they must keep resolving.
Sizes and digests are the published ones; where a release only published an md5 we check that.
Meta published no digest for SAM 2 / 2.1: those files come from the hub's copies, and the sha256
the hub lists for them (their LFS object id) is read and checked when they are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

SAM_FOLDER = "sams"
DINO_FOLDER = "grounding-dino"
# SAM 3 is both stages: its files are listed and found by both loaders (gated weights: never downloaded for you)
SAM3_FOLDER = "sam3"
# ViTMatte, the learned matting method of RefineMask / --refine vitmatte
VITMATTE_FOLDER = "vitmatte"

_META = "https://dl.fbaipublicfiles.com/segment_anything/"
_HQ = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
_DINO = "https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/"
_HUB = "https://huggingface.co/"


@dataclass(frozen=True)
class KnownModel:
    display_name: str
    folder: str
    filename: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    hub_lfs: bool = False  # no published digest: check the hub's LFS sha256 for ``url`` at download time


def _sam2(version: str, size: str, megabytes: int) -> KnownModel:
    """Meta's SAM 2 / 2.1 release file, from its ``facebook/sam2*-hiera-*`` hub repo."""
    filename = f"sam{version}_hiera_{size}.pt"
    url = f"{_HUB}facebook/sam{version}-hiera-{size.replace('_', '-')}/resolve/main/{filename}"
    return KnownModel(f"sam{version}_hiera_{size} ({megabytes}MB)", SAM_FOLDER, filename, url, hub_lfs=True)


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("sam_vit_h (2.56GB)", SAM_FOLDER, "sam_vit_h_4b8939.pth", _META + "sam_vit_h_4b8939.pth", 2564550879,
               "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    KnownModel("sam_vit_l (1.25GB)", SAM_FOLDER, "sam_vit_l_0b3195.pth", _META + "sam_vit_l_0b3195.pth", 1249524607,
               "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    KnownModel("sam_vit_b (375MB)", SAM_FOLDER, "sam_vit_b_01ec64.pth", _META + "sam_vit_b_01ec64.pth", 375042383,
               "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    KnownModel("sam_hq_vit_h (2.57GB)", SAM_FOLDER, "sam_hq_vit_h.pth", _HQ + "sam_hq_vit_h.pth", None,
               "a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35", "3560f6b6a5a6edacd814a1325c39640a"),
    KnownModel("sam_hq_vit_l (1.25GB)", SAM_FOLDER, "sam_hq_vit_l.pth", _HQ + "sam_hq_vit_l.pth", None, None,
               "08947267966e4264fb39523eccc33f86"),
    KnownModel("sam_hq_vit_b (379MB)", SAM_FOLDER, "sam_hq_vit_b.pth", _HQ + "sam_hq_vit_b.pth", None, None,
               "c6b8953247bcfdc8bb8ef91e36a6cacc"),
    KnownModel("mobile_sam(39MB)", SAM_FOLDER, "mobile_sam.pt",
               "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt", 40728226,
               "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"),
    KnownModel("GroundingDINO_SwinT_OGC (694MB)", DINO_FOLDER, "groundingdino_swint_ogc.pth", _DINO + "groundingdino_swint_ogc.pth",
               693997677, "3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799"),
    KnownModel("GroundingDINO_SwinB (938MB)", DINO_FOLDER, "groundingdino_swinb_cogcoor.pth", _DINO + "groundingdino_swinb_cogcoor.pth",
               938057991, "46270f7a822e6906b655b729c90613e48929d0f2bb8b9b76fd10a856f3ac6ab7"),
    *(_sam2("2.1", size, mb) for size, mb in (("tiny", 156), ("small", 184), ("base_plus", 324), ("large", 898))),
    *(_sam2("2", size, mb) for size, mb in (("tiny", 156), ("small", 185), ("base_plus", 324), ("large", 898))),
    # EdgeTAM (Meta, Apache-2.0): SAM 2's interface, a RepViT encoder and a memory of 512 tokens a frame
    KnownModel("edgetam (EdgeTAM, 14M parameters)", SAM_FOLDER, "edgetam.pt", _HUB + "facebook/EdgeTAM/resolve/main/edgetam.pt",
               hub_lfs=True),
)  # fmt: skip


def known_model(name: str) -> KnownModel | None:
    return next((m for m in KNOWN_MODELS if name in (m.display_name, m.filename)), None)


@dataclass(frozen=True)
class KnownRepo:
    """A transformers-format model on the Hugging Face hub, fetched into ``folder/dirname``."""

    display_name: str
    folder: str
    repo_id: str
    dirname: str


KNOWN_REPOS: tuple[KnownRepo, ...] = (
    KnownRepo("grounding-dino-tiny (transformers)", DINO_FOLDER, "IDEA-Research/grounding-dino-tiny", "grounding-dino-tiny"),
    KnownRepo("grounding-dino-base (transformers)", DINO_FOLDER, "IDEA-Research/grounding-dino-base", "grounding-dino-base"),
    *(
        KnownRepo(f"mm_grounding_dino_{name} (transformers)", DINO_FOLDER, f"openmmlab-community/mm_grounding_dino_{name}",
                  f"mm_grounding_dino_{name}")
        for name in ("tiny_o365v1_goldg", "tiny_o365v1_goldg_grit", "tiny_o365v1_goldg_v3det", "tiny_o365v1_goldg_grit_v3det",
                     "base_o365v1_goldg_v3det", "base_all", "large_o365v2_oiv6_goldg", "large_all")
    ),  # MM-Grounding-DINO (Apache-2.0): Swin-T, Swin-B, Swin-L
    KnownRepo("sam-vit-base (transformers)", SAM_FOLDER, "facebook/sam-vit-base", "sam-vit-base"),
    KnownRepo("sam-vit-large (transformers)", SAM_FOLDER, "facebook/sam-vit-large", "sam-vit-large"),
    KnownRepo("sam-vit-huge (transformers)", SAM_FOLDER, "facebook/sam-vit-huge", "sam-vit-huge"),
    KnownRepo("sam-hq-vit-base (transformers)", SAM_FOLDER, "syscv-community/sam-hq-vit-base", "sam-hq-vit-base"),
    KnownRepo("sam-hq-vit-large (transformers)", SAM_FOLDER, "syscv-community/sam-hq-vit-large", "sam-hq-vit-large"),
    KnownRepo("sam-hq-vit-huge (transformers)", SAM_FOLDER, "syscv-community/sam-hq-vit-huge", "sam-hq-vit-huge"),
    *(
        KnownRepo(f"sam2.1-hiera-{size} (transformers)", SAM_FOLDER, f"facebook/sam2.1-hiera-{size}", f"sam2.1-hiera-{size}")
        for size in ("tiny", "small", "base-plus", "large")
    ),
    *(
        KnownRepo(f"vitmatte-{size}-composition-1k (transformers)", VITMATTE_FOLDER, f"hustvl/vitmatte-{size}-composition-1k",
                  f"vitmatte-{size}-composition-1k")
        for size in ("small", "base")
    ),  # ViTMatte (MIT): huggingface_hub checks every file against the hub's sha256 as it downloads
)


def known_repo(name: str) -> KnownRepo | None:
    return next((r for r in KNOWN_REPOS if name in (r.display_name, r.dirname, r.repo_id)), None)
