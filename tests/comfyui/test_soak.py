"""A long-running server: 200 prompts through a fresh real ComfyUI, with /free and bad input mixed in.

Three model files per loader, in six pairs, take turns in blocks of twenty prompts (a user changes
models now and then, not on every prompt; the first three blocks load every file); within a block,
images, prompts, precisions and batch sizes alternate, and every tenth prompt is bad input (in the block's
models, but for the bad file it names). Every good prompt's masks and detections must
equal our library's on the same files and pixels. The server's resident memory must stay flat once
every model has been loaded, and /free must give back what the models held, the same after every
/free (the pack keeps nothing ComfyUI does not hold). One version runs in CI
(``GROUNDED_SAM_SOAK_VERSIONS``, default 0.33.0; "0.3.75,0.33.0" for both).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from client import ComfyServer, RejectedPrompt, status_mib
from conftest import HERE, comfy_image, installed_tree, measure
from PIL import Image

pytestmark = pytest.mark.comfyui

SOAK_VERSIONS = tuple(os.environ.get("GROUNDED_SAM_SOAK_VERSIONS", "0.33.0").split(","))
PROMPTS = 200
FREE_EVERY = 60  # /free before prompts 60, 120, 180
BLOCK = 20  # prompts per model pair
BAD_EVERY = 10  # prompts 9, 19, ... are bad input
DINOS = ("soak_dino_a.pth", "soak_dino_b.safetensors", "soak_mm")
SAMS = ("soak_sam_a.pth", "soak_hq.pth", "soak_mobile.pt")
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))  # every file twice; all of them in the first three blocks
IMAGES = {"a": "soak_a.png", "b": "soak_b.png", "c": "soak_c.png"}
TEXTS = ("person . bus", "a window . the wheel")
VARIANTS = (("a", 0, "fp32"), ("bc", 1, "bf16"), ("c", 0, "auto"))  # (frames, prompt, precision): batch sizes 1 and 2
# (detector, segmenter, frames, prompt, precision)
COMBOS = tuple((d, s, frames, text, precision) for d, s in PAIRS for frames, text, precision in VARIANTS)
THRESHOLD, MAX_DETECTIONS = 0.0, 2  # every frame gets two objects, whatever the random weights score
BAD = ("empty prompt", "threshold out of range", "SAM file in the Grounding DINO loader", "truncated SAM file")


@pytest.fixture(scope="module")
def soak_models(models_dir, dino_checkpoint, sam_checkpoint, mm_folder, bert_small) -> Path:
    """A models folder of small files: three Grounding DINO (two release layouts, one MM folder), three SAM
    (ViT, HQ, MobileSAM), plus a SAM file in the wrong folder and a truncated one."""
    from reference_models import TINY_DINO, meta_sam, original_grounding_dino
    from safetensors.torch import save_file

    root = models_dir / "soak"
    dino, sams = root / "grounding-dino", root / "sams"
    dino.mkdir(parents=True, exist_ok=True)
    sams.mkdir(parents=True, exist_ok=True)
    shutil.copy(dino_checkpoint, dino / DINOS[0])
    other = original_grounding_dino(bert_small, **{**TINY_DINO, "seed": 1})
    save_file({k: v.clone().contiguous() for k, v in other.state_dict().items()}, dino / DINOS[1])  # tied tensors saved apart
    shutil.copytree(mm_folder, dino / DINOS[2], dirs_exist_ok=True)
    shutil.copy(sam_checkpoint, sams / SAMS[0])
    torch.save(meta_sam(hq=True, seed=1).state_dict(), sams / SAMS[1])
    torch.save(meta_sam(kind="tiny_vit", seed=2).state_dict(), sams / SAMS[2])
    shutil.copy(sam_checkpoint, dino / "soak_wrong.pth")
    whole = (sams / SAMS[0]).read_bytes()
    (sams / "soak_truncated.pth").write_bytes(whole[: len(whole) // 2])
    return root


@pytest.fixture(scope="module")
def soak_pngs(models_dir, input_pngs) -> dict[str, Path]:
    """Three 480x640 crops of the shared photos (a batch needs frames of one size)."""
    out = models_dir / "soak-images"
    out.mkdir(exist_ok=True)
    sources = {"a": ("bus", (0, 0)), "b": ("zidane", (0, 300)), "c": ("picture4", (400, 700))}
    pngs = {}
    for key, (name, (top, left)) in sources.items():
        picture = Image.open(input_pngs[name]).convert("RGB").crop((left, top, left + 640, top + 480))
        picture.save(out / IMAGES[key])
        pngs[key] = out / IMAGES[key]
    return pngs


def library_in_this_process(models: Path, pngs: dict[str, Path], out: Path) -> None:
    """Every combo's result from our library, each file loaded once, saved to ``out``, and in ``out``.json what
    our libraries' first use left in this process: its anonymous memory once the models and results are freed
    as a ``/free`` frees them, over the same after importing them. That is state torch keeps after first use
    (on a CPU with native bf16, the bf16 prompts' kernels in oneDNN's and ideep's caches, bounded as the pack
    bounds them: importing ``grounded_sam.comfy`` does it), which a server keeps too."""
    import gc

    import transformers.modeling_utils  # noqa: F401  (imported at a ComfyUI server's start)
    from transformers import GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection, SamHQModel, SamModel  # noqa: F401

    import grounded_sam.comfy  # noqa: F401  (bounds torch's kernel caches, as when ComfyUI loads the pack)
    from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam
    from grounded_sam.runtime.freed_memory import release_freed_memory

    def anon_after_release() -> float:
        gc.collect()
        release_freed_memory()  # what the pack does once ComfyUI lets go of a model
        return status_mib()["RssAnon"]

    before = anon_after_release()
    detectors = [load_grounding_dino(models / "grounding-dino" / name, "cpu") for name in DINOS]
    segmenters = [load_sam(models / "sams" / name, "cpu") for name in SAMS]
    results = {}
    for combo, (d, s, frames, text, precision) in enumerate(COMBOS):
        image = torch.cat([comfy_image(pngs[f]) for f in frames])
        pipeline = GroundedSam(detectors[d], segmenters[s], precision)
        results[combo] = pipeline.segment(image, TEXTS[text], DetectionSettings(THRESHOLD, 0.25, max_detections=MAX_DETECTIONS))
    torch.save(results, out)
    del detectors, segmenters, pipeline, results, image
    out.with_suffix(".json").write_text(json.dumps({"first_use_anon_mib": anon_after_release() - before}))


CHILD = ("import json, sys; from pathlib import Path; sys.path[:0] = json.loads(sys.argv[1]); import test_soak; "
         "test_soak.library_in_this_process(Path(sys.argv[2]), {k: Path(v) for k, v in json.loads(sys.argv[3]).items()}, Path(sys.argv[4]))")  # fmt: skip


def library_in_a_child(models: Path, pngs: dict[str, Path], out: Path) -> tuple[dict[int, object], float]:
    """``library_in_this_process`` in a fresh process (this one has run other tests: its first use is long past)."""
    import subprocess
    import sys

    paths = json.dumps([str(HERE), str(HERE.parent), str(HERE.parents[1])])
    argv = [sys.executable, "-c", CHILD, paths, str(models), json.dumps({k: str(v) for k, v in pngs.items()}), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    first_use = json.loads(out.with_suffix(".json").read_text())["first_use_anon_mib"]
    return torch.load(out, weights_only=False), max(0.0, first_use)


@pytest.fixture(scope="module", params=SOAK_VERSIONS)
def soak_server(request, tmp_path_factory, server_checkpoints, soak_models, soak_pngs):
    """A fresh server (its memory at start is the baseline), the soak models added through extra_model_paths.yaml."""
    version = request.param
    home = installed_tree(version, server_checkpoints)
    work = tmp_path_factory.mktemp(f"soak-{version}")
    config = work / "extra_model_paths.yaml"
    config.write_text(f"soak:\n  base_path: {soak_models}\n  sams: sams\n  grounding-dino: grounding-dino\n")
    comfy = ComfyServer(version, home, work, extra_args=("--extra-model-paths-config", str(config)))
    for png in soak_pngs.values():
        shutil.copy(png, comfy.input_dir / png.name)
    comfy.start()
    yield comfy
    comfy.stop()


def graph(combo: tuple, text: str, threshold: float = THRESHOLD, dino: str | None = None, sam: str | None = None) -> tuple[dict, str, str]:
    """loaders -> LoadImage (ImageBatch for two) -> segment -> MaskToImage -> SaveImage, and the JSON to PreviewAny."""
    d, s, frames, _, precision = combo
    nodes: dict[str, dict] = {}

    def add(kind: str, **inputs) -> str:
        nodes[str(len(nodes) + 1)] = {"class_type": kind, "inputs": inputs}
        return str(len(nodes))

    sam_node = add("SAMModelLoader (segment anything)", model_name=sam or SAMS[s])
    dino_node = add("GroundingDinoModelLoader (segment anything)", model_name=dino or DINOS[d])
    loads = [add("LoadImage", image=IMAGES[f]) for f in frames]
    image = [loads[0], 0] if len(loads) == 1 else [add("ImageBatch", image1=[loads[0], 0], image2=[loads[1], 0]), 0]
    segment = add("GroundingDinoSAMSegment (segment anything)", sam_model=[sam_node, 0], grounding_dino_model=[dino_node, 0], image=image,
                  prompt=text, threshold=threshold, max_detections=MAX_DETECTIONS, precision=precision)  # fmt: skip
    saved = add("SaveImage", images=[add("MaskToImage", mask=[segment, 1]), 0], filename_prefix="soak")
    rows = add("PreviewAny", source=[segment, 3])
    return nodes, saved, rows


def run_bad(server: ComfyServer, kind: str, combo: tuple) -> str:
    """One bad prompt in the models of ``combo`` (the block's: a user's mistake does not change their other
    model), so only the loader given a bad file loses its model; the error the server gives."""
    if kind == "threshold out of range":
        with pytest.raises(RejectedPrompt) as refused:
            server.queue(graph(combo, TEXTS[0], threshold=1.5)[0])
        return json.dumps(refused.value.body)[:200]
    nodes = {
        "empty prompt": lambda: graph(combo, "  .  ")[0],
        "SAM file in the Grounding DINO loader": lambda: graph(combo, TEXTS[0], dino="soak_wrong.pth")[0],
        "truncated SAM file": lambda: graph(combo, TEXTS[0], sam="soak_truncated.pth")[0],
    }[kind]()
    run = server.run(nodes)
    assert run.status == "error", kind
    message = run.error["exception_message"]
    assert {"empty prompt": "the prompt is empty", "SAM file in the Grounding DINO loader": "choose it in the SAM loader",
            "truncated SAM file": "truncated"}[kind] in message, message  # fmt: skip
    return message


def assert_equal_to_library(server: ComfyServer, run, saved: str, rows: str, expected, what: str) -> None:
    images = run.outputs(saved)["images"]
    masks = [np.asarray(Image.open(server.output_dir / i["subfolder"] / i["filename"]))[..., 0] > 127 for i in images]
    want = expected.merged_masks()
    assert len(masks) == want.shape[0], what
    for frame, (got, mask) in enumerate(zip(masks, want, strict=True)):
        union = (torch.from_numpy(got) | mask).sum().item()
        overlap = 1.0 if union == 0 else (torch.from_numpy(got) & mask).sum().item() / union
        assert overlap >= 0.999, f"{what}, frame {frame}: mask IoU {overlap:.5f}"
    got_rows, want_rows = json.loads("".join(run.outputs(rows)["text"])), expected.to_json()
    assert [(r["frame"], r["label"]) for r in got_rows] == [(r["frame"], r["label"]) for r in want_rows], what
    h, w = expected.image_size
    for a, b in zip(got_rows, want_rows, strict=True):
        assert np.abs((np.array(a["box_xyxy"]) - np.array(b["box_xyxy"])) / [w, h, w, h]).max() < 1e-3 and abs(a["score"] - b["score"]) < 1e-3


def settled_rss(server: ComfyServer, seconds: float = 15.0) -> float:
    """The server's RSS once /free has been applied (it is applied between prompts, in the worker loop)."""
    deadline, lowest = time.monotonic() + seconds, server.rss_mib()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = server.rss_mib()
        if now >= lowest - 1:  # stopped falling
            return now
        lowest = now
    return lowest


def test_200_prompts_with_free_and_bad_input(soak_server, soak_models, soak_pngs, tmp_path):
    server = soak_server
    expected, first_use = library_in_a_child(soak_models, soak_pngs, tmp_path / "library.pt")
    start_rss, start_parts = server.rss_mib(), server.rss_parts_mib()
    parts_after_free: list[dict[str, int]] = []
    curve: list[tuple[int, int]] = []
    errors: list[str] = []
    good = 0
    started = time.monotonic()
    after_free: list[float] = []
    for i in range(PROMPTS):
        if i and i % FREE_EVERY == 0:
            server.free()
            after_free.append(settled_rss(server))
            parts_after_free.append(server.rss_parts_mib())
            curve.append((i, round(after_free[-1])))
        block, step = divmod(i, BLOCK)
        pair_combos = (block % len(PAIRS)) * len(VARIANTS)  # the block's model pair: its combos start here
        if i % BAD_EVERY == BAD_EVERY - 1:
            errors.append(run_bad(server, BAD[(i // BAD_EVERY) % len(BAD)], COMBOS[pair_combos]))
        else:
            combo = pair_combos + step % len(VARIANTS)
            nodes, saved, rows = graph(COMBOS[combo], TEXTS[COMBOS[combo][3]])
            run = server.run(nodes)
            assert run.status == "success", f"prompt {i}: {json.dumps(run.error)[:2000]}"
            assert_equal_to_library(server, run, saved, rows, expected[combo], f"prompt {i}, combo {COMBOS[combo]}")
            good += 1
        curve.append((i, round(server.rss_mib())))
    seconds = time.monotonic() - started
    server.free()
    after_free.append(settled_rss(server))
    parts_after_free.append(server.rss_parts_mib())
    first_round = max(rss for i, rss in curve if i < FREE_EVERY)  # every model file loaded at least once by then
    later = max(rss for i, rss in curve if i >= FREE_EVERY)
    measure(server.version, "soak: 200 prompts", good=good, bad=len(errors), seconds=round(seconds, 1), rss_start_mib=round(start_rss),
            rss_first_round_max_mib=first_round, rss_later_max_mib=later, rss_after_each_free_mib=[round(r) for r in after_free],
            after_free_over_start=round(after_free[-1] / start_rss, 3), library_first_use_anon_mib=round(first_use, 1),
            rss_parts_at_start_mib=start_parts, rss_parts_after_each_free_mib=parts_after_free, rss_curve_every_10=[rss for i, rss in curve if i % 10 == 0])  # fmt: skip
    assert good == PROMPTS - PROMPTS // BAD_EVERY and len(errors) == PROMPTS // BAD_EVERY
    assert later <= 1.1 * first_round, f"RSS grew from {first_round} to {later} MiB after the first round"
    # /free gives back the same every time: nothing accumulates over 200 prompts. What stays above the start is the
    # process's own first-use state (code pages of the libraries first used, in ``rss_parts``' file-backed part, and
    # the modules imported on the first prompt), the same after the first /free as after the fourth.
    assert after_free[-1] <= 1.1 * after_free[0], f"after /free the server held {after_free[0]:.0f} MiB, then {after_free[-1]:.0f} MiB"
    assert max(after_free) < first_round, "/free gave nothing back"
    # Within 10 % of the start, beside what torch itself keeps after its first use of the same paths (measured in a
    # fresh process of our library on the same combos: about 16 MiB on an AVX2 CPU, about 42 MiB where bf16 is native)
    bound = 1.1 * start_rss + first_use
    assert max(after_free) <= bound, (f"after /free the server held {max(after_free):.0f} MiB, over 1.1x its start ({start_rss:.0f} MiB) "
                                      f"+ the library's own first use ({first_use:.0f} MiB)")
