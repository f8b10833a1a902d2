from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grounded_sam.images import load_image_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
torch.set_num_threads(max(1, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGES = SHARED / "images"


def shared_image(name: str) -> torch.Tensor:
    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"{path} is not here (../shared/images holds the real photos used for parity checks)")
    return load_image_file(path)[0]


@pytest.fixture(scope="session")
def bus() -> torch.Tensor:
    return shared_image("bus.jpg")


@pytest.fixture(scope="session")
def zidane() -> torch.Tensor:
    return shared_image("zidane.jpg")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def reference_dino(workdir):
    from reference_models import bert_folder, original_grounding_dino

    return original_grounding_dino(bert_folder(workdir / "bert"))


@pytest.fixture(scope="session")
def dino_checkpoint(workdir, reference_dino) -> Path:
    from reference_models import save_original_release

    return save_original_release(reference_dino, workdir / "groundingdino_swint_ogc.pth")


@pytest.fixture(scope="session")
def detector(dino_checkpoint):
    from grounded_sam import load_grounding_dino

    return load_grounding_dino(dino_checkpoint)


@pytest.fixture(scope="session")
def reference_sam():
    from reference_models import meta_sam

    return meta_sam()


@pytest.fixture(scope="session")
def sam_checkpoint(workdir, reference_sam) -> Path:
    path = workdir / "sam_vit_tiny.pth"
    torch.save(reference_sam.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def segmenter(sam_checkpoint):
    from grounded_sam import load_sam

    return load_sam(sam_checkpoint)


@pytest.fixture(scope="session")
def batch_with_empty_middle(detector, bus, zidane):
    from scenes import batch_with_empty_middle as build

    return build(detector, bus, zidane)
