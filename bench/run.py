"""Ours against the seed pack's pipeline, same random full-size weights, same work, one process.

The reference is the original Grounding DINO (rf-groundingdino) plus Meta's ``SamPredictor``,
called the way ``comfyui_segment_anything`` called them. Random weights give arbitrary boxes,
so both sides segment the same fixed boxes and their masks are compared: a speed-up can never
come from doing different work. Ratios are reference time / our time (> 1: we are faster).

    bash bench/run.sh [--sam vit_b|vit_h] [--repeats 3]
"""

from __future__ import annotations

import argparse
import atexit
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference-model builders the parity tests use

from reference_models import bert_folder, original_grounding_dino, perturb, save_original_release  # noqa: E402

from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam  # noqa: E402
from grounded_sam.clicks import Clicks  # noqa: E402
from grounded_sam.media.images import to_uint8_frames  # noqa: E402
from grounded_sam.prompts import Prompt  # noqa: E402

SHARED = ROOT.parent / "shared"
SIZE = (800, 1200)  # H, W of the benchmark image
PROMPTS = ("person . bus", "a red car . the window")
BOX_COUNTS = (1, 10, 50)
E2E_BOXES = 10
EXCLUDED = "shirt . bag . tie"


# --- inputs ---------------------------------------------------------------------------------


def bench_frames(count: int) -> torch.Tensor:
    """``count`` distinct real photos, resized to 800x1200, as a ComfyUI IMAGE."""
    names = ["picture4.jpg", "bus.jpg", "zidane.jpg", "picture1.jpg", "picture2.jpg"]
    frames = []
    for name in names[:count]:
        path = SHARED / "images" / name
        if path.is_file():
            image = Image.open(path).convert("RGB").resize((SIZE[1], SIZE[0]), Image.BILINEAR)
        else:  # no shared photos: a fixed random picture still times the same work
            image = Image.fromarray(np.random.default_rng(len(frames)).integers(0, 255, (*SIZE, 3), dtype=np.uint8))
        frames.append(torch.from_numpy(np.asarray(image).copy()))
    return torch.stack(frames).float() / 255.0


def fixed_boxes(count: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    h, w = SIZE
    x0, y0 = rng.uniform(0, 0.6 * w, count), rng.uniform(0, 0.6 * h, count)
    bw, bh = rng.uniform(0.1 * w, 0.4 * w, count), rng.uniform(0.1 * h, 0.4 * h, count)
    return torch.tensor(np.stack([x0, y0, x0 + bw, y0 + bh], 1), dtype=torch.float32)


# --- the reference pipeline, as the seed pack ran it -------------------------------------------


class Reference:
    def __init__(self, dino, sam) -> None:
        import groundingdino.datasets.transforms as T
        from segment_anything import SamPredictor

        self.dino = dino
        self.predictor = SamPredictor(sam)
        self.transform = T.Compose(
            [T.RandomResize([800], max_size=1333), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
        )

    @staticmethod
    def to_pil(item: torch.Tensor) -> Image.Image:
        return Image.fromarray(np.clip(255.0 * item.cpu().numpy(), 0, 255).astype(np.uint8)).convert("RGBA")

    def detect(self, pil: Image.Image, prompt: str, threshold: float = 0.3) -> torch.Tensor:
        image, _ = self.transform(pil.convert("RGB"), None)
        caption = prompt.lower().strip()
        caption = caption if caption.endswith(".") else caption + "."
        with torch.no_grad():
            outputs = self.dino(image[None], captions=[caption])
        logits = outputs["pred_logits"].sigmoid()[0]
        boxes = outputs["pred_boxes"][0][logits.max(dim=1)[0] > threshold]
        w, h = pil.size
        boxes = boxes * torch.tensor([w, h, w, h])
        boxes[:, :2] -= boxes[:, 2:] / 2
        boxes[:, 2:] += boxes[:, :2]
        return boxes

    def set_image(self, pil: Image.Image) -> np.ndarray:
        image = np.array(pil)[..., :3]
        self.predictor.set_image(image)
        return image

    def decode(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        prompt = self.predictor.transform.apply_boxes_torch(boxes, image.shape[:2])
        masks, _, _ = self.predictor.predict_torch(None, None, boxes=prompt, multimask_output=False)
        return masks[:, 0]

    def frame(self, item: torch.Tensor, prompt: str, boxes: torch.Tensor) -> torch.Tensor:
        pil = self.to_pil(item)
        self.detect(pil, prompt)  # its boxes are arbitrary with random weights: the fixed ones are segmented
        return self.decode(self.set_image(pil), boxes)


class Ours:
    def __init__(self, detector, segmenter, precision: str = "fp32") -> None:
        self.pipeline = GroundedSam(detector, segmenter, precision)
        self.detector, self.segmenter = detector, segmenter
        self.settings = DetectionSettings(0.3, 0.25)

    def clear(self) -> None:
        self.detector.clear_caches()
        self.segmenter.clear_caches()

    def frame(self, frame_u8: torch.Tensor, prompt: str, boxes: torch.Tensor) -> torch.Tensor:
        with self.pipeline._autocast():
            self.detector.detect(frame_u8, prompt, self.settings)
            return self.segmenter.masks_for_boxes(self.segmenter.embed(frame_u8), boxes)


# --- measuring ------------------------------------------------------------------------------


def median_time(fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, before: Callable[[], None] | None = None) -> dict[str, float]:
    """Median time of each function, run in turns (order reversed every round), so that a ratio
    between them is not a drift of this machine between two rows measured minutes apart."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        for name in list(fns)[:: 1 if round_ % 2 == 0 else -1]:
            times[name].append(median_time(fns[name], 1, before))
    return {name: statistics.median(t) for name, t in times.items()}


def min_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double().clamp(min=1)
    return float((inter / union).min())


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    seconds = median_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def model_gflops(ours: Ours, frame_u8: torch.Tensor) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    from grounded_sam.dino.text import caption_from_prompt, tokenize

    result = {}
    detector, segmenter = ours.detector, ours.segmenter
    text = tokenize(detector.tokenizer, caption_from_prompt(PROMPTS[0]))
    pixels = detector.preprocess(frame_u8)
    embedding = segmenter._embed(frame_u8)
    for name, fn in (
        ("grounding_dino", lambda: detector.model(pixel_values=pixels, **text)),
        ("sam_encoder", lambda: segmenter._embed(frame_u8)),
        ("sam_decoder_10_boxes", lambda: segmenter._decode(embedding, fixed_boxes(10) * 1024 / SIZE[1])),
    ):
        ours.clear()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fn()
        result[name] = counter.get_total_flops() / 1e9
    ours.clear()
    return result


def exclusion_rows(ours: Ours, frames: torch.Tensor, repeats: int) -> list[dict]:
    """``--exclude "shirt . bag . tie" --max-detections 5`` on two photos: how many masks are decoded to keep 5, and what it costs.

    Three excluded phrases, because the random-weight detector gives "shirt" alone no box (every box goes to
    "bus"); with these, hundreds of boxes are excluded ones. The same call without the exclusion is the
    baseline (the reference pipeline has no exclusion). Decoded masks are counted at the segmenter.
    """
    settings = DetectionSettings(0.3, 0.25, max_detections=5)
    decoded: list[int] = []
    segmenter = ours.segmenter
    real = segmenter.masks_for_boxes

    def counting(embedding, boxes: torch.Tensor, on_chunk=None) -> torch.Tensor:  # noqa: ANN001
        decoded.append(int(boxes.shape[0]))
        return real(embedding, boxes, on_chunk=on_chunk)

    rows = []
    segmenter.masks_for_boxes = counting
    try:
        for i in range(2):
            image = frames[i : i + 1]
            frame_u8 = to_uint8_frames(image)[0]
            kept, excluded = ours.pipeline.find_kept_and_excluded(frame_u8, Prompt.parse(PROMPTS[0], EXCLUDED), settings)
            decoded.clear()
            result = ours.pipeline.segment(image, PROMPTS[0], settings, exclude=EXCLUDED)
            masks = sum(decoded)
            plain_s = median_time(lambda image=image: ours.pipeline.segment(image, PROMPTS[0], settings), repeats, ours.clear)
            excluding_s = median_time(lambda image=image: ours.pipeline.segment(image, PROMPTS[0], settings, exclude=EXCLUDED), repeats, ours.clear)
            rows.append({"scenario": f"exclude {EXCLUDED}, max 5, photo {i + 1}", "kept": len(result), "excluded_boxes": len(excluded),
                         "masks_decoded": masks, "plain_s": plain_s, "excluding_s": excluding_s, "excluding_over_plain": excluding_s / plain_s})  # fmt: skip
            print(f"  exclude '{EXCLUDED}', max 5, photo {i + 1}: kept {len(result)} of {len(kept)}, {len(excluded)} excluded boxes, {masks} masks "
                  f"decoded; {excluding_s:.3f}s against {plain_s:.3f}s without the exclusion")  # fmt: skip
    finally:
        segmenter.masks_for_boxes = real
    return rows


# --- new models against the ones they can replace, same image and prompt, same run ----------------


def mm_grounding_dino_swin_t(folder: Path) -> Path:
    """MM-Grounding-DINO Swin-T (BERT-base, 6+6 layers, 900 queries: transformers' defaults) with random weights."""
    from transformers import BertTokenizer as Tokenizer
    from transformers import (
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
    )

    from grounded_sam.dino.text import PACKAGED_VOCAB

    model = MMGroundingDinoForObjectDetection(MMGroundingDinoConfig()).eval()
    perturb(model, seed=5, scale=0.02)
    model.save_pretrained(folder)
    GroundingDinoProcessor(GroundingDinoImageProcessor(), Tokenizer(vocab=str(PACKAGED_VOCAB))).save_pretrained(folder)
    return folder


def segmentation_time(segmenter, frame_u8: torch.Tensor, boxes: torch.Tensor, repeats: int) -> float:
    """Encoder + masks for the boxes, caches cleared before each run."""
    return median_time(lambda: segmenter.masks_for_boxes(segmenter.embed(frame_u8), boxes), repeats, segmenter.clear_caches)


def sam2_rows(work: Path, ours: Ours, frame_u8: torch.Tensor, repeats: int) -> list[dict]:
    """SAM 2.1 tiny and base_plus (Meta's release files, random weights) against our SAM ViT-B, and against
    Meta's ``SAM2ImagePredictor`` on the same weights: same image, same fixed boxes."""
    from reference_models import meta_sam2, save_sam2_release
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    boxes = fixed_boxes(E2E_BOXES)
    vit_b_s = segmentation_time(ours.segmenter, frame_u8, boxes, repeats)
    rows = []
    for size in ("tiny", "base_plus"):
        model = meta_sam2(f"2.1-{size}", seed=7)
        segmenter = load_sam(save_sam2_release(model, work / f"sam2.1_hiera_{size}.pt"), "cpu")
        predictor = SAM2ImagePredictor(model)
        image = frame_u8.numpy()

        def meta(predictor=predictor, image=image) -> torch.Tensor:
            predictor.set_image(image)
            masks, _, _ = predictor.predict(box=boxes.numpy(), multimask_output=False)
            return torch.from_numpy(masks[:, 0] > 0)

        ours_s = segmentation_time(segmenter, frame_u8, boxes, repeats)
        meta_s = median_time(meta, repeats)
        iou = min_iou(meta(), segmenter.masks_for_boxes(segmenter.embed(frame_u8), boxes))
        rows.append({"scenario": f"masks: SAM 2.1 {size} vs SAM ViT-B (ours, same image, {E2E_BOXES} boxes)",
                     "sam_vit_b_s": vit_b_s, "sam2_s": ours_s, "sam2_over_vit_b": ours_s / vit_b_s})  # fmt: skip
        rows.append({"scenario": f"masks: SAM 2.1 {size}, Meta's SAM2ImagePredictor vs ours",
                     "reference_s": meta_s, "ours_s": ours_s, "ratio": meta_s / ours_s, "mask_iou_min": round(iou, 5)})  # fmt: skip
        print(f"  SAM 2.1 {size} {ours_s:.3f}s vs SAM ViT-B {vit_b_s:.3f}s ({ours_s / vit_b_s:.2f}x the time); "
              f"Meta's predictor {meta_s:.3f}s (ratio {meta_s / ours_s:.2f}x), mask IoU min {iou:.5f}")  # fmt: skip
    return rows


def new_model_rows(work: Path, ours: Ours, frame_u8: torch.Tensor, repeats: int) -> list[dict]:
    """Detection time of MM-Grounding-DINO Swin-T against Grounding DINO Swin-T (both ours), and of
    MM-Grounding-DINO through transformers' own processor path (its reference); then the SAM 2.1 rows."""
    from transformers import AutoProcessor, MMGroundingDinoForObjectDetection

    folder = mm_grounding_dino_swin_t(work / "mm_grounding_dino_swin_t")
    mm = load_grounding_dino(folder, "cpu")
    processor = AutoProcessor.from_pretrained(folder)
    stock = MMGroundingDinoForObjectDetection.from_pretrained(folder).eval()  # transformers' model as it ships, no caches
    pil = Image.fromarray(frame_u8.numpy())
    settings = DetectionSettings(0.3, 0.25, nms_iou=None)
    text = ". ".join(p.strip() for p in PROMPTS[0].split(".")) + "."

    def transformers_path() -> None:
        inputs = processor(images=pil, text=text, return_tensors="pt")
        with torch.inference_mode():
            outputs = stock(**inputs)
        processor.post_process_grounded_object_detection(outputs, inputs["input_ids"], threshold=0.3, text_threshold=0.25,
                                                         target_sizes=[tuple(frame_u8.shape[:2])])  # fmt: skip

    gdino_s = median_time(lambda: ours.detector.detect(frame_u8, PROMPTS[0], settings), repeats, ours.clear)
    mm_s = median_time(lambda: mm.detect(frame_u8, PROMPTS[0], settings), repeats, mm.clear_caches)
    hf_s = median_time(transformers_path, repeats)
    rows = [
        {"scenario": "detection: MM-Grounding-DINO Swin-T vs Grounding DINO Swin-T (ours, same image)",
         "grounding_dino_s": gdino_s, "mm_grounding_dino_s": mm_s, "mm_over_grounding_dino": mm_s / gdino_s},
        {"scenario": "detection: MM-Grounding-DINO Swin-T, transformers' processor path vs ours",
         "reference_s": hf_s, "ours_s": mm_s, "ratio": hf_s / mm_s},
    ]  # fmt: skip
    print(f"  MM-Grounding-DINO Swin-T {mm_s:.3f}s vs Grounding DINO Swin-T {gdino_s:.3f}s ({mm_s / gdino_s:.2f}x the time); "
          f"transformers' own path {hf_s:.3f}s (ratio {hf_s / mm_s:.2f}x)")  # fmt: skip
    return rows + sam2_rows(work, ours, frame_u8, repeats)


def sam3_rows(work: Path, ours: Ours, frame_u8: torch.Tensor, repeats: int) -> list[dict]:
    """Full-size SAM 3 (Meta's release layout, random weights) in both sockets against our Grounding DINO Swin-T +
    SAM ViT-B: same image, same prompt, then a second prompt on the same image; and SAM 3's text path against
    Meta's ``Sam3Processor`` on the same weights."""
    from reference_models import meta_sam3, meta_sam3_on_cpu, save_sam3_release
    from sam3.model.sam3_image_processor import Sam3Processor

    model = meta_sam3(depth=32, global_blocks=(7, 15, 23, 31), text_layers=24, interactive=True, seed=9, memory_layers=4, fusion_layers=6)
    path = save_sam3_release(model, work / "sam3.pt")
    sam3 = GroundedSam(load_grounding_dino(path, "cpu"), load_sam(path, "cpu"), "fp32")
    grounded = GroundedSam(ours.detector, ours.segmenter, "fp32")
    settings = DetectionSettings(0.3, 0.25, max_detections=E2E_BOXES)
    repeats = min(repeats, 2)  # a full-size SAM 3 frame takes a minute or more on a small CPU

    def end_to_end(pipeline: GroundedSam) -> float:
        return median_time(lambda: pipeline.segment(frame_u8, PROMPTS[0], settings), repeats, pipeline.detector.clear_caches)

    def second_prompt(pipeline: GroundedSam) -> float:
        def once() -> float:
            pipeline.detector.clear_caches()
            pipeline.segmenter.clear_caches()
            pipeline.segment(frame_u8, PROMPTS[0], settings)
            start = time.perf_counter()
            pipeline.segment(frame_u8, PROMPTS[1], settings)
            return time.perf_counter() - start

        return statistics.median(once() for _ in range(repeats))

    def clear_both() -> None:
        grounded.detector.clear_caches()
        grounded.segmenter.clear_caches()

    sam3_s, sam3_second = end_to_end(sam3), second_prompt(sam3)
    grounded_s = median_time(lambda: grounded.segment(frame_u8, PROMPTS[0], settings), repeats, clear_both)
    grounded_second = second_prompt(grounded)
    phrase = PROMPTS[0].split(".")[0].strip()
    pil = Image.fromarray(frame_u8.numpy())

    def meta() -> None:
        with meta_sam3_on_cpu():
            processor = Sam3Processor(model, device="cpu", confidence_threshold=0.3)
            processor.set_text_prompt(phrase, processor.set_image(pil))

    meta_s = median_time(meta, repeats)
    ours_s = median_time(lambda: sam3.detector.detect(frame_u8, phrase, DetectionSettings(0.3, nms_iou=None)), repeats, sam3.detector.clear_caches)
    boxes = fixed_boxes(E2E_BOXES)
    masks: dict[str, torch.Tensor] = {}

    def meta_boxes() -> None:
        with meta_sam3_on_cpu():
            state = Sam3Processor(model, device="cpu").set_image(pil)
            masks["meta"] = torch.as_tensor(model.predict_inst(state, box=boxes.numpy(), multimask_output=False)[0][:, 0])

    def our_boxes() -> None:
        masks["ours"] = sam3.segmenter.masks_for_boxes(sam3.segmenter.embed(frame_u8), boxes)

    meta_boxes_s = median_time(meta_boxes, repeats)
    our_boxes_s = median_time(our_boxes, repeats, sam3.segmenter.clear_caches)
    vit_b_s = median_time(lambda: ours.segmenter.masks_for_boxes(ours.segmenter.embed(frame_u8), boxes), repeats, ours.segmenter.clear_caches)
    box_iou = round(min_iou(masks["meta"].bool(), masks["ours"]), 5)
    rows = [
        {"scenario": f"end to end: SAM 3 in both sockets vs Grounding DINO Swin-T + SAM ViT-B (ours, same image and prompt, at most {E2E_BOXES} objects)",
         "grounded_sam_s": grounded_s, "sam3_s": sam3_s, "sam3_over_grounded_sam": sam3_s / grounded_s},
        {"scenario": "second prompt, same image: SAM 3 vs Grounding DINO Swin-T + SAM ViT-B",
         "grounded_sam_s": grounded_second, "sam3_s": sam3_second, "sam3_over_grounded_sam": sam3_second / grounded_second},
        {"scenario": f"SAM 3 text path, one phrase ({phrase!r}): Meta's Sam3Processor vs ours",
         "reference_s": meta_s, "ours_s": ours_s, "ratio": meta_s / ours_s},
        {"scenario": f"SAM 3 box path, image + {E2E_BOXES} boxes: Meta's predict_inst vs ours",
         "reference_s": meta_boxes_s, "ours_s": our_boxes_s, "ratio": meta_boxes_s / our_boxes_s, "min_mask_iou": box_iou},
        {"scenario": f"masks for {E2E_BOXES} boxes: SAM 3's box path vs SAM ViT-B (both ours, image + boxes)",
         "sam_vit_b_s": vit_b_s, "sam3_s": our_boxes_s, "sam3_over_sam_vit_b": our_boxes_s / vit_b_s},
    ]  # fmt: skip
    print(f"  SAM 3 end to end {sam3_s:.2f}s vs Grounding DINO + SAM ViT-B {grounded_s:.2f}s ({sam3_s / grounded_s:.2f}x the time); "
          f"second prompt {sam3_second:.2f}s vs {grounded_second:.2f}s; Meta's processor {meta_s:.2f}s vs ours {ours_s:.2f}s "
          f"(ratio {meta_s / ours_s:.2f}x); box path Meta {meta_boxes_s:.2f}s vs ours {our_boxes_s:.2f}s (IoU {box_iou:.5f}), "
          f"SAM ViT-B {vit_b_s:.2f}s")  # fmt: skip
    return rows


# --- peak memory, one side per process ------------------------------------------------------


def peak_rss_child(side: str, dino_path: str, sam_path: str, bert: str, sam_kind: str) -> None:
    frames = bench_frames(1)
    boxes = fixed_boxes(E2E_BOXES)
    if side == "reference":
        from segment_anything import sam_model_registry

        dino = original_grounding_dino(Path(bert), enc=6, dec=6)
        state = torch.load(dino_path, map_location="cpu", weights_only=True)["model"]
        dino.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
        runner = Reference(dino.eval(), sam_model_registry[sam_kind](checkpoint=sam_path).eval())
        runner.frame(frames[0], PROMPTS[0], boxes)
    else:
        runner = Ours(load_grounding_dino(dino_path), load_sam(sam_path))
        runner.frame(to_uint8_frames(frames)[0], PROMPTS[0], boxes)
    print(json.dumps({"peak_rss_mib": own_peak_rss_mib()}))


def _own_status_mib(field: str) -> float | None:
    """A memory line of this process's /proc status in MiB; None where there is no /proc."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else ():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def own_peak_rss_mib() -> float:
    """VmHWM: this process's own high-water mark (ru_maxrss would carry the parent's over fork+exec)."""
    peak = _own_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_rss_mib() -> float | None:
    """VmRSS: what this process holds now (the peak alone cannot tell memory kept from one step's high point)."""
    return _own_status_mib("VmRSS")


def peak_rss(side: str, paths: list[str]) -> float:
    run = subprocess.run([sys.executable, __file__, "--peak-rss-child", side, *paths], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_rss_mib"]


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", choices=["vit_b", "vit_l", "vit_h"], default="vit_b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--only", choices=["all", "core", "models", "sam3"], default="all",
                        help="core: only the pipeline rows (end to end, detection, encoder, decoding, clicks, second prompt, batch, bf16, "
                             "memory); models: only the new-model rows (MM-Grounding-DINO against Grounding DINO, SAM 2.1 against SAM "
                             "ViT-B, SAM 3); sam3: only the SAM 3 rows")
    parser.add_argument("--peak-rss-child", nargs=5, metavar=("SIDE", "DINO", "SAM", "BERT", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_rss_child:
        peak_rss_child(*args.peak_rss_child)
        return

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="grounded-sam-bench-"))
    atexit.register(shutil.rmtree, work, True)  # gigabytes of model files
    print(f"building full-size models with random weights (Grounding DINO Swin-T + BERT-base, SAM {args.sam}) in {work}")
    bert = bert_folder(work / "bert", hidden=768, layers=12, intermediate=3072)
    ref_dino = original_grounding_dino(bert, enc=6, dec=6)
    from segment_anything import sam_model_registry

    ref_sam = sam_model_registry[args.sam]()
    perturb(ref_sam, seed=3)
    ref_sam.eval()
    dino_path = save_original_release(ref_dino, work / "groundingdino_swint_ogc.pth")
    sam_path = work / f"sam_{args.sam}.pth"
    torch.save(ref_sam.state_dict(), sam_path)
    reference = Reference(ref_dino, ref_sam)
    ours = Ours(load_grounding_dino(dino_path), load_sam(sam_path))

    frames = bench_frames(4)
    frames_u8 = to_uint8_frames(frames)
    item, frame_u8 = frames[0], frames_u8[0]
    pil = Reference.to_pil(item)
    boxes = fixed_boxes(E2E_BOXES)
    rows: list[dict] = []

    def row(name: str, ref_s: float, ours_s: float, **extra) -> None:
        rows.append({"scenario": name, "reference_s": ref_s, "ours_s": ours_s, "ratio": ref_s / ours_s, **extra})
        print(f"  {name:<34} ref {ref_s:8.3f}s  ours {ours_s:8.3f}s  ratio {ref_s / ours_s:5.2f}x" + "".join(f"  {k}={v}" for k, v in extra.items()))

    r = args.repeats
    models = [] if args.only in ("sam3", "core") else new_model_rows(work, ours, frame_u8, r)
    models += [] if args.only == "core" else sam3_rows(work, ours, frame_u8, r)
    if args.only in ("models", "sam3"):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"repeats": r, "image_size": SIZE, "models": models}, indent=2))
        print(f"wrote {args.out}")
        return
    ref_masks = reference.frame(item, PROMPTS[0], boxes)
    ours_masks = ours.frame(frame_u8, PROMPTS[0], boxes)
    row("end to end, 1 image, 10 boxes", median_time(lambda: reference.frame(item, PROMPTS[0], boxes), r),
        median_time(lambda: ours.frame(frame_u8, PROMPTS[0], boxes), r, ours.clear), mask_iou_min=round(min_iou(ref_masks, ours_masks), 5))  # fmt: skip
    row("detection only", median_time(lambda: reference.detect(pil, PROMPTS[0]), r),
        median_time(lambda: ours.detector.detect(frame_u8, PROMPTS[0], ours.settings), r, ours.clear))  # fmt: skip
    row("SAM encoder only", median_time(lambda: reference.set_image(pil), r), median_time(lambda: ours.segmenter._embed(frame_u8), r))
    image_np = reference.set_image(pil)
    embedding = ours.segmenter._embed(frame_u8)
    for n in BOX_COUNTS:
        b = fixed_boxes(n, seed=n)
        iou = min_iou(reference.decode(image_np, b), ours.segmenter.masks_for_boxes(embedding, b))
        row(f"mask decoding, {n} boxes", median_time(lambda b=b: reference.decode(image_np, b), r),
            median_time(lambda b=b: ours.segmenter.masks_for_boxes(embedding, b), r), mask_iou_min=round(iou, 5))  # fmt: skip

    # clicks: two on the object and one off it, Meta's predict(point_coords, point_labels) against masks_for_clicks
    h, w = frame_u8.shape[:2]
    clicks = Clicks.of([(0.4 * w, 0.6 * h), (0.5 * w, 0.7 * h)], [(0.8 * w, 0.3 * h)])

    def ref_clicks() -> np.ndarray:
        return reference.predictor.predict(point_coords=clicks.coords.numpy(), point_labels=clicks.labels().numpy(), multimask_output=False)[0]

    iou = min_iou(torch.from_numpy(ref_clicks()), ours.segmenter.masks_for_clicks(embedding, [clicks])[0])
    row("mask from 3 clicks", median_time(ref_clicks, r), median_time(lambda: ours.segmenter.masks_for_clicks(embedding, [clicks]), r),
        mask_iou_min=round(iou, 5))  # fmt: skip

    def ours_first_then_second() -> tuple[float, float]:  # both prompts in one pass: the ratio is not a drift between rows
        ours.clear()
        start = time.perf_counter()
        ours.frame(frame_u8, PROMPTS[0], boxes)
        middle = time.perf_counter()
        ours.frame(frame_u8, PROMPTS[1], boxes)
        return middle - start, time.perf_counter() - middle

    first = rows[0]["ours_s"]
    passes = [ours_first_then_second() for _ in range(r)]
    second = statistics.median(s for _, s in passes)
    row("second prompt, same image", median_time(lambda: reference.frame(item, PROMPTS[1], boxes), r), second,
        ours_second_over_first=round(second / statistics.median(f for f, _ in passes), 3))  # fmt: skip

    def ref_batch() -> None:
        for i in range(4):
            reference.frame(frames[i], PROMPTS[0], boxes)

    def ours_batch() -> None:
        for i in range(4):
            ours.frame(frames_u8[i], PROMPTS[0], boxes)

    ours_batch_s = median_time(ours_batch, r, ours.clear)
    row("batch of 4 frames", median_time(ref_batch, r), ours_batch_s, ours_batch_over_single=round(ours_batch_s / first, 3))

    exclusion = exclusion_rows(ours, frames, r)

    fast = Ours(ours.detector, ours.segmenter, "bf16")
    fast_masks = fast.frame(frame_u8, PROMPTS[0], boxes)
    both = interleaved_times({"fp32": lambda: ours.frame(frame_u8, PROMPTS[0], boxes), "bf16": lambda: fast.frame(frame_u8, PROMPTS[0], boxes)},
                             r, ours.clear)  # fmt: skip
    bf16_s, fp32_s = both["bf16"], both["fp32"]
    ran_as = fast.pipeline.effective_precision()  # fp32 where the CPU has no native bf16 (devices.choose_precision)
    bf16 = {"end_to_end_s": bf16_s, "fp32_end_to_end_s": fp32_s, "speedup_vs_fp32": fp32_s / bf16_s,
            "mask_iou_min_vs_fp32": min_iou(fast_masks, ours_masks), "ran_as": ran_as,
            "weights": "random ViT/Swin weights (no real MobileSAM weights in ../shared)"}  # fmt: skip
    print(f"  bf16 autocast (ran as {ran_as}), timed in turns with fp32: end to end {bf16_s:.3f}s vs {fp32_s:.3f}s ({fp32_s / bf16_s:.2f}x fp32), "
          f"min mask IoU vs fp32 {bf16['mask_iou_min_vs_fp32']:.4f}")

    print("measuring peak RSS, one process per side ...")
    paths = [str(dino_path), str(sam_path), str(bert), args.sam]
    memory = {"reference_peak_rss_mib": peak_rss("reference", paths), "ours_peak_rss_mib": peak_rss("ours", paths)}
    print(f"  peak RSS: reference {memory['reference_peak_rss_mib']:.0f} MiB, ours {memory['ours_peak_rss_mib']:.0f} MiB")

    flops = model_gflops(ours, frame_u8)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "matmul_gflops_fp32": matmul_gflops(torch.float32), "matmul_gflops_bf16": matmul_gflops(torch.bfloat16)}  # fmt: skip
    for name, g in flops.items():
        print(f"  {name}: {g:.1f} GFLOP -> at least {g / machine['matmul_gflops_fp32']:.2f}s at this CPU's fp32 matmul rate")
    print(f"  matmul: {machine['matmul_gflops_fp32']:.1f} GFLOP/s fp32, {machine['matmul_gflops_bf16']:.1f} GFLOP/s bf16")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"sam": args.sam, "repeats": r, "image_size": SIZE, "rows": rows, "models": models, "bf16": bf16, "exclusion": exclusion, "memory": memory, "gflops": flops, "machine": machine}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
