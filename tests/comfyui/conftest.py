"""Real ComfyUI servers (installed by scripts/install-comfyui.sh) with this pack copied into custom_nodes/.

Each version gets one server for the whole session, random-weight checkpoints in the release
formats under its ``models/`` (Grounding DINO and SAM with the release's per-layer shapes and fewer
layers, in files of the release's exact size), PNG inputs made from ../shared/images. Without an install
the suite skips, unless GROUNDED_SAM_REQUIRE_COMFYUI=1 (set by scripts/test.sh) makes that an error.
Per-case status and time, and the figures the cases measure, are printed at the end of the run
and written to ``.comfyui/results.json``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from client import ComfyServer  # noqa: E402

VERSIONS = tuple(os.environ.get("GROUNDED_SAM_COMFYUI_VERSIONS", "0.3.75,0.33.0").split(","))
COMFYUI_DIR = Path(os.environ.get("GROUNDED_SAM_COMFYUI_DIR", ROOT / ".comfyui"))
SHARED_IMAGES = ROOT.parent / "shared" / "images"
PACK_FOLDER = "grounded-sam"  # what a clone of this repository is called in custom_nodes/
DINO_FILE = "groundingdino_swint_ogc.pth"
SAM_FILE = "sam_vit_b_01ec64.pth"
WRONG_FILE = "sam_file_in_the_dino_folder.pth"
SAM3_FILE = "sam3.pt"  # Meta's SAM 3 release format, reduced (two ViT and two text layers), random weights
MM_FOLDER = "mm_grounding_dino_random"  # a transformers MM-Grounding-DINO folder (small, random weights)
SAM2_FILE = "sam2.1_hiera_tiny.pt"  # Meta's SAM 2.1 tiny release format, full size, random weights
SAM2_VIDEO_FOLDER = "sam2.1-hiera-tiny-512"  # the same weights as the hub's sam2_video folder, reading frames at 512
EDGETAM_FOLDER = "EdgeTAM"  # a random EdgeTAM as the hub's edgetam_video folder (full size: it is light)
VITMATTE_DIRNAME = "vitmatte-small-composition-1k"  # the hub folder's name, holding the suite's small random ViTMatte
QUICK_VERSION = "0.33.0"  # the one version the quick tier (scripts/test.sh --quick) starts

MEASURED: dict[str, dict] = {}  # version -> case -> figures
OUTCOMES: list[tuple[str, str, str, float]] = []  # (version, case, outcome, seconds)


def measure(version: str, case: str, **figures) -> None:
    MEASURED.setdefault(version, {}).setdefault(case, {}).update(figures)


@pytest.fixture(scope="session")
def server_checkpoints(models_dir, sam2_tiny, sam2_video_folder_512, sam3_release, mm_folder, vitmatte_random) -> dict[str, Path]:
    """The servers' model files, random weights, in the release formats and under the release names:

    - Grounding DINO Swin-T and SAM ViT-B with the release's per-layer shapes (BERT-base width, 256-wide
      transformer, 768-wide ViT) and fewer layers, each in a file of the release's exact size (the
      loaders check a release name against its size), so each layer costs what it costs in the release;
    - SAM 2.1 tiny as released, SAM 3 reduced with its tracker, a small MM-Grounding-DINO folder and a
      small ViTMatte folder (the same files the parity tests use);
    - SAM 2.1 tiny's weights again as the hub's ``sam2_video`` folder reading frames at 512, for the
      tracking cases (memory attention at 1024 would cost each of them about five times as much).
    """
    from reference_models import REDUCED_SWINT_DINO, bert_folder, meta_sam, original_grounding_dino

    from grounded_sam.model_files.registry import known_model

    work = models_dir / "comfyui"
    work.mkdir(exist_ok=True)
    bert = bert_folder(work / "bert-base-width", hidden=768, layers=2, intermediate=3072)
    dino = original_grounding_dino(bert, **REDUCED_SWINT_DINO)
    sam = meta_sam(embed=768, depth=2, heads=12, seed=3)  # ViT-B's blocks: one windowed, one global
    paths = {"dino": work / DINO_FILE, "sam": work / SAM_FILE}
    save_at_size({"model": {"module." + k: v for k, v in dino.state_dict().items()}}, paths["dino"], known_model(DINO_FILE).size)
    save_at_size(sam.state_dict(), paths["sam"], known_model(SAM_FILE).size)
    paths["mm"] = mm_folder
    paths["sam2"] = sam2_tiny[1]
    paths["sam2_video"] = sam2_video_folder_512
    paths["sam3"] = sam3_release[1]
    paths["vitmatte"] = vitmatte_random
    from reference_models import save_edgetam_video_folder

    paths["edgetam"] = save_edgetam_video_folder(work / EDGETAM_FOLDER)
    return paths


def save_at_size(checkpoint: dict, path: Path, size: int) -> None:
    """Saved in the legacy (non-zip) ``torch.save`` format, padded by a string to the release file's exact size.

    The loaders check a file named like a release against the release's size (a half-downloaded
    file is refused); the padding is not a tensor, so the loaders ignore it.
    """
    pad = 0
    for _ in range(8):
        buffer = io.BytesIO()
        torch.save({**checkpoint, "_padding": "x" * pad}, buffer, _use_new_zipfile_serialization=False)
        if buffer.tell() == size:
            path.write_bytes(buffer.getvalue())
            return
        pad += size - buffer.tell()
        assert pad >= 0, f"{path.name} is larger than the release ({buffer.tell()} > {size} bytes)"
    raise AssertionError(f"could not pad {path.name} to {size} bytes")


@pytest.fixture(scope="session")
def input_pngs(tmp_path_factory) -> dict[str, Path]:
    """The shared photos as PNG: ComfyUI 0.33 decodes JPEG with PyAV (pixels differ from PIL), PNG identically."""
    if not SHARED_IMAGES.is_dir():
        pytest.skip(f"{SHARED_IMAGES} is not here: the ComfyUI suite runs on the shared photos")
    out = tmp_path_factory.mktemp("inputs")
    pngs = {}
    for jpg in sorted(SHARED_IMAGES.glob("*.jpg")):
        png = out / f"{jpg.stem}.png"
        Image.open(jpg).convert("RGB").save(png)
        pngs[jpg.stem] = png
    return pngs


def comfy_image(png: Path) -> torch.Tensor:
    """The IMAGE ComfyUI's LoadImage makes of a PNG: float32 [1, H, W, 3] in 0..1."""
    return torch.from_numpy(np.asarray(Image.open(png).convert("RGB")).astype(np.float32) / 255.0)[None]


class Library:
    """Our library in this process on the server's checkpoint files: what every server result must equal."""

    def __init__(self, checkpoints: dict[str, Path]) -> None:
        from grounded_sam import GroundedSam, load_grounding_dino, load_sam

        self.pipeline = GroundedSam(load_grounding_dino(checkpoints["dino"]), load_sam(checkpoints["sam"]))
        self._results: dict[tuple, object] = {}

    def segment(self, png: Path, prompt: str, threshold: float, text_threshold: float = 0.25, max_detections: int = 0, exclude: str = ""):
        from grounded_sam import DetectionSettings

        key = (png, prompt, threshold, text_threshold, max_detections, exclude)
        if key not in self._results:
            settings = DetectionSettings(threshold, text_threshold, max_detections=max_detections or None)
            self._results[key] = self.pipeline.segment(comfy_image(png), prompt, settings, exclude=exclude)
        return self._results[key]

    def box_count(self, png: Path, prompt: str) -> int:
        """How many boxes thresholds of 0 keep (after NMS)."""
        from grounded_sam import DetectionSettings
        from grounded_sam.media.images import to_uint8_frames

        return len(self.pipeline.detector.detect(to_uint8_frames(comfy_image(png))[0], prompt, DetectionSettings(0.0, 0.0)))

    def phrases_in_top(self, png: Path, prompt: str) -> list[int]:
        """The prompt phrase of every query, best score first (no threshold, no NMS)."""
        from grounded_sam import DetectionSettings
        from grounded_sam.media.images import to_uint8_frames

        frame = to_uint8_frames(comfy_image(png))[0]
        return self.pipeline.detector.detect(frame, prompt, DetectionSettings(0.0, 0.0, nms_iou=None)).phrase_index.tolist()

    def scores(self, png: Path, prompt: str) -> torch.Tensor:
        """Every query's score, best first (no threshold, no NMS)."""
        from grounded_sam import DetectionSettings
        from grounded_sam.media.images import to_uint8_frames

        frame = to_uint8_frames(comfy_image(png))[0]
        return self.pipeline.detector.detect(frame, prompt, DetectionSettings(0.0, 0.0, nms_iou=None)).scores


@pytest.fixture(scope="session")
def library(server_checkpoints) -> Library:
    return Library(server_checkpoints)


def install_pack(tree: Path) -> None:
    """This repository, copied into custom_nodes/ as a user's clone would be (its requirements are installed)."""
    target = tree / "custom_nodes" / PACK_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    ignore = shutil.ignore_patterns(".git", ".venv*", ".comfyui", "__pycache__", "*.egg-info", ".ruff_cache", "results")
    shutil.copytree(ROOT, target, ignore=ignore)


def install_models(tree: Path, checkpoints: dict[str, Path]) -> None:
    dino_dir, sam_dir, sam3_dir = tree / "models" / "grounding-dino", tree / "models" / "sams", tree / "models" / "sam3"
    for folder in (dino_dir, sam_dir, sam3_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    os.link(checkpoints["dino"], dino_dir / DINO_FILE)
    os.link(checkpoints["sam"], sam_dir / SAM_FILE)
    os.link(checkpoints["sam2"], sam_dir / SAM2_FILE)
    os.link(checkpoints["sam3"], sam3_dir / SAM3_FILE)
    os.link(checkpoints["sam"], dino_dir / WRONG_FILE)
    shutil.copytree(checkpoints["mm"], dino_dir / MM_FOLDER)
    shutil.copytree(checkpoints["sam2_video"], sam_dir / SAM2_VIDEO_FOLDER)
    shutil.copytree(checkpoints["edgetam"], sam_dir / EDGETAM_FOLDER)
    vitmatte_dir = tree / "models" / "vitmatte"
    shutil.rmtree(vitmatte_dir, ignore_errors=True)
    shutil.copytree(checkpoints["vitmatte"], vitmatte_dir / VITMATTE_DIRNAME)  # where the node's "vitmatte (small)" looks


_PREPARED: set[str] = set()  # versions whose tree holds this pack and the suite's models


def installed_tree(version: str, server_checkpoints: dict[str, Path]) -> Path:
    """ComfyUI ``version``'s home, with this pack and the suite's models in its tree (once per session)."""
    home = COMFYUI_DIR / version
    if not (home / ".installed").is_file():
        message = f"ComfyUI {version} is not installed in {home}: run `bash scripts/install-comfyui.sh {version}`"
        if os.environ.get("GROUNDED_SAM_REQUIRE_COMFYUI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if version not in _PREPARED:
        install_pack(home / "ComfyUI")
        install_models(home / "ComfyUI", server_checkpoints)
        _PREPARED.add(version)
    return home


def running(comfy: ComfyServer, input_pngs: dict[str, Path], case: str):
    """``comfy`` started with the photos in its input folder, stopped when the session is done."""
    for png in input_pngs.values():
        shutil.copy(png, comfy.input_dir / png.name)
    started = time.monotonic()
    comfy.start()
    measure(comfy.version, case, seconds=round(time.monotonic() - started, 1))
    yield comfy
    comfy.stop()


@pytest.fixture(scope="session", params=VERSIONS)
def server(request, tmp_path_factory, server_checkpoints, input_pngs):
    version = request.param
    home = installed_tree(version, server_checkpoints)
    yield from running(ComfyServer(version, home, tmp_path_factory.mktemp(f"comfyui-{version}")), input_pngs, "server start")


@pytest.fixture(scope="session", params=VERSIONS)
def impact_server(request, tmp_path_factory, server_checkpoints, input_pngs):
    """The same ComfyUI with Impact Pack beside this pack (scripts/install-impact.sh), in its own process.

    Impact's Python needs (OpenCV, ultralytics, ...) live in a virtualenv layered on ComfyUI's, so the
    other cases keep running where this pack's results cannot depend on them.
    """
    version = request.param
    home = installed_tree(version, server_checkpoints)
    layer = home / "impact"
    if not (layer / ".installed").is_file():
        message = f"Impact Pack is not installed beside ComfyUI {version}: run `bash scripts/install-impact.sh {version}`"
        if os.environ.get("GROUNDED_SAM_REQUIRE_COMFYUI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    probe = layer / "custom_nodes" / "grounded_sam_test_probe"
    shutil.rmtree(probe, ignore_errors=True)
    shutil.copytree(HERE / "impact_probe", probe, ignore=shutil.ignore_patterns("__pycache__"))
    workdir = tmp_path_factory.mktemp(f"comfyui-impact-{version}")
    paths = workdir / "extra_model_paths.yaml"
    paths.write_text(f"impact_pack:\n  custom_nodes: {layer / 'custom_nodes'}\n")
    comfy = ComfyServer(version, home, workdir, ("--extra-model-paths-config", str(paths)), python=layer / "venv" / "bin" / "python")
    yield from running(comfy, input_pngs, "impact server start")


# --- the report ---------------------------------------------------------------------------


def pytest_runtest_logreport(report):
    if "tests/comfyui" not in report.nodeid.replace(os.sep, "/"):
        return
    if report.when == "call" or report.outcome != "passed":
        name, _, params = report.nodeid.split("::")[-1].partition("[")
        params = params.rstrip("]").split("-")
        version = next((p for p in params if p in VERSIONS), "?")
        case = " ".join([name.removeprefix("test_"), *(p for p in params if p != version)])
        OUTCOMES.append((version, f"{case} ({report.when})" if report.when != "call" else case, report.outcome, round(report.duration, 1)))


def pytest_terminal_summary(terminalreporter):
    if not OUTCOMES:
        return
    write = terminalreporter.write_line
    write("")
    write("real ComfyUI suite: case, version, status, seconds")
    for version, case, outcome, seconds in OUTCOMES:
        write(f"  {case:<70} {version:<7} {outcome:<7} {seconds:7.1f}")
    write("measured:")
    for version, cases in MEASURED.items():
        for case, figures in cases.items():
            write(f"  {version:<7} {case}: {json.dumps(figures)}")
    COMFYUI_DIR.mkdir(parents=True, exist_ok=True)
    (COMFYUI_DIR / "results.json").write_text(json.dumps({"outcomes": OUTCOMES, "measured": MEASURED}, indent=2))
