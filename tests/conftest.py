"""Fixtures shared by the whole suite: the photos, and every random-weight model file, built once per run.

Every model file lives in one session folder (``models_dir``) and is built the first time a test
asks for it; no test builds its own copy of a model another test already has. Tests of what
surrounds the models (hosts, outputs, caching, progress) use a tiny Grounding DINO in the release
layout; parity tests use the release widths (``parity_*``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grounded_sam.media.images import load_image_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
torch.set_num_threads(max(1, os.cpu_count() or 1))

from suite_report import pytest_runtest_logreport, pytest_terminal_summary  # noqa: E402,F401 - the time split printed at the end

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGES = SHARED / "images"


def shared_image(name: str) -> torch.Tensor:
    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"{path} is not here (../shared/images holds the real photos used for parity checks)")
    return load_image_file(path)[0]


def claim_native_bf16(monkeypatch, native: bool) -> None:
    """Tell the pipeline whether this CPU multiplies bf16 natively (``Accelerators.cpu_bf16``), whatever it has."""
    import dataclasses

    from grounded_sam import pipeline
    from grounded_sam.runtime.devices import accelerators

    monkeypatch.setattr(pipeline, "accelerators", lambda: dataclasses.replace(accelerators(), cpu_bf16=native))


@pytest.fixture
def bf16_on_this_cpu(monkeypatch):
    """Tests of what bf16 autocast computes run it on any CPU: the pipeline is told this one has native bf16.

    Without native bf16 the pipeline runs an asked-for bf16 in fp32 (``devices.choose_precision``); here torch
    emulates bf16 instead, with the same numbers, only slower.
    """
    claim_native_bf16(monkeypatch, True)


@pytest.fixture
def no_native_bf16(monkeypatch):
    """The pipeline is told this CPU lacks native bf16, as an AVX2 CPU does, whatever this one has.

    A fixture, not an import: ``from conftest import ...`` finds whichever conftest pytest loaded first
    (tests/comfyui has its own), so it broke when the whole suite ran.
    """
    claim_native_bf16(monkeypatch, False)


@pytest.fixture(scope="session")
def bus() -> torch.Tensor:
    return shared_image("bus.jpg")


@pytest.fixture(scope="session")
def zidane() -> torch.Tensor:
    return shared_image("zidane.jpg")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The one folder every built model file goes to."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def bert_small(models_dir) -> Path:
    from reference_models import bert_folder

    return bert_folder(models_dir / "bert-small")


# --- Grounding DINO: release widths for parity, tiny for everything else -------------------------


@pytest.fixture(scope="session")
def reference_dino(bert_small):
    """The original implementation, Swin-T and the release's transformer widths, two encoder and decoder layers."""
    from reference_models import original_grounding_dino

    return original_grounding_dino(bert_small)


@pytest.fixture(scope="session")
def parity_dino_checkpoint(models_dir, reference_dino) -> Path:
    from reference_models import save_original_release

    return save_original_release(reference_dino, models_dir / "groundingdino_swint_parity.pth")


@pytest.fixture(scope="session")
def parity_detector(parity_dino_checkpoint):
    from grounded_sam import load_grounding_dino

    return load_grounding_dino(parity_dino_checkpoint)


@pytest.fixture(scope="session")
def dino_checkpoint(models_dir, bert_small) -> Path:
    """A tiny Grounding DINO in the release file's layout, loaded by the real loader."""
    from reference_models import TINY_DINO, original_grounding_dino, save_original_release

    return save_original_release(original_grounding_dino(bert_small, **TINY_DINO), models_dir / "groundingdino_tiny.pth")


@pytest.fixture(scope="session")
def detector(dino_checkpoint):
    from grounded_sam import load_grounding_dino

    return load_grounding_dino(dino_checkpoint)


# --- Segment Anything ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def reference_sam():
    from reference_models import meta_sam

    return meta_sam()


@pytest.fixture(scope="session")
def sam_checkpoint(models_dir, reference_sam) -> Path:
    path = models_dir / "sam_vit_tiny.pth"
    torch.save(reference_sam.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def segmenter(sam_checkpoint):
    from grounded_sam import load_sam

    return load_sam(sam_checkpoint)


@pytest.fixture(scope="session")
def sam2_tiny(models_dir):
    """(Meta's SAM 2.1 tiny model, its release-format file): the release architecture, random weights."""
    from reference_models import meta_sam2, save_sam2_release

    model = meta_sam2("2.1-tiny", seed=3)
    return model, save_sam2_release(model, models_dir / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="session")
def sam2_video_folder_512(models_dir, sam2_tiny) -> Path:
    """``sam2_tiny``'s weights as the hub's ``sam2_video`` folder, its config reading frames at 512 pixels.

    The tracking tests that check bookkeeping, not SAM 2's input size, run on it: memory attention
    costs the square of the tokens, so a frame costs about a seventh of the release's 1024.
    """
    from reference_models import sam2_video_at_size

    from grounded_sam import load_sam

    folder = models_dir / "sam2.1-hiera-tiny-512"
    sam2_video_at_size(load_sam(sam2_tiny[1], "cpu").video, 512).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sam3_release(models_dir, bus):
    """(Meta's SAM 3 image model with its box-to-mask head, its ``sam3.pt``-format file), two ViT and two text layers."""
    from reference_models import calibrate_sam3, meta_sam3, save_sam3_release

    model = meta_sam3(seed=1, interactive=True)
    calibrate_sam3(model, bus)
    return model, save_sam3_release(model, models_dir / "sam3.pt")


@pytest.fixture(scope="session")
def mm_folder(models_dir) -> Path:
    """A small random MM-Grounding-DINO in the transformers layout of ``openmmlab-community/mm_grounding_dino_*``."""
    from reference_models import mm_grounding_dino_folder

    return mm_grounding_dino_folder(models_dir / "mm_grounding_dino_tiny")


@pytest.fixture(scope="session")
def vitmatte_random(models_dir) -> Path:
    """A small random ViTMatte folder in the layout of the hub's ``hustvl/vitmatte-small-composition-1k``."""
    from reference_models import vitmatte_folder

    return vitmatte_folder(models_dir / "vitmatte-small-random")


@pytest.fixture(scope="session")
def batch_with_empty_middle(detector, bus, zidane):
    from scenes import batch_with_empty_middle as build

    return build(detector, bus, zidane)
