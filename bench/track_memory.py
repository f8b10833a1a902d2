"""Peak RSS of ``grounded-sam track``'s path on a short and a long clip at the same frame size.

Each length runs in a fresh process (VmHWM, its own high-water mark): frames stream from the
shared clip (1280x720, decoded with PyAV a frame at a time, looped to the length asked), the
tracker follows up to 2 objects with ``redetect_every=10``, and every result goes through the
command line's writer (tracks.json and MOT after every frame). Random weights in the release
formats: a tiny Grounding DINO and SAM 2.1 tiny as released. ``--size 512`` gives SAM 2.1 the same
weights as the hub's ``sam2_video`` folder reading frames at 512 (a frame costs about a seventh of
the release's 1024, so a 600-frame run takes minutes, not hours; what is held per frame is the
same set of tensors, each a quarter of the size). ``--family sam3`` puts one SAM 3 in both loaders
instead (Meta's ``sam3.pt`` format with the release's widths and fewer layers, as the tests build it:
two ViT blocks, one memory-attention layer; it reads every frame at its own 1008 pixels): SAM 3
finds the objects and its tracker follows them, one ViT pass per frame.

Each frame the tracker yields, what it holds between frames is printed by part (``held_mib``: SAM 2's
memory session, the held frames, masks waiting to be final), beside the RSS before and after loading.

    python bench/track_memory.py --frames 60 600 [--size 512] [--family sam3] [--tracks 50] [--dino reduced]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
CLIP = ROOT.parent / "shared" / "videos" / "bigbuckbunny.mp4"


def looped_frames(count: int):
    from grounded_sam.video.frames import open_frames

    def forever():
        while True:
            yield from open_frames(CLIP)

    return itertools.islice(forever(), count)


def child(frames: int, dino: str, sam: str, out: str, tracks: int = 2) -> None:
    from run import own_peak_rss_mib, own_rss_mib

    from grounded_sam import DetectionSettings, GroundedSam, load_grounding_dino, load_sam
    from grounded_sam.video.writer import TrackWriter

    before_models = own_rss_mib() or 0.0
    pipeline = GroundedSam(load_grounding_dino(dino, "cpu"), load_sam(sam, "cpu"), "fp32")
    settings = DetectionSettings(box_threshold=0.0, text_threshold=0.0, max_detections=tracks)
    loaded = own_peak_rss_mib()
    weights = _mib(_tensor_bytes(_model_tensors(pipeline)))
    print(json.dumps({"rss_before_models_mib": round(before_models, 1), "rss_with_models_mib": round(own_rss_mib() or 0.0, 1),
                      "weights_mib": round(weights, 1)}), file=sys.stderr, flush=True)
    started = time.monotonic()
    peaks = {}
    with TrackWriter(Path(out)) as writer:
        results = pipeline.track(looped_frames(frames), "bunny . tree", settings, redetect_every=10)
        for index, found in enumerate(results):
            writer.add(index, None, found)
            if (index + 1) % 30 == 0 or tracks > 2 or index in (0, 9, 10):
                peaks[index + 1] = round(own_peak_rss_mib(), 1)
                print(json.dumps({"frames": index + 1, "peak_rss_mib": peaks[index + 1], "rss_mib": round(own_rss_mib() or 0.0, 1),
                                  "seconds": round(time.monotonic() - started, 1), **held_by_tracker(results)}), file=sys.stderr, flush=True)
    tracks = {row["track_id"] for entry in json.loads((Path(out) / "tracks.json").read_text()) for row in entry["objects"]}
    print(json.dumps({"frames": writer.frames, "peak_rss_mib": round(own_peak_rss_mib(), 1), "after_loading_mib": round(loaded, 1),
                      "peak_at_frame": peaks, "seconds": round(time.monotonic() - started, 1), "tracks": sorted(tracks)}))


def _model_tensors(pipeline) -> list:
    modules = [pipeline.detector.module(), pipeline.segmenter.module(), getattr(pipeline.segmenter, "video", None)]
    return [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]


def _tensor_bytes(tensors) -> int:
    """Bytes of the storages under ``tensors`` (each storage once: views and shared weights count once)."""
    import torch

    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _mib(n: int) -> float:
    return n / 2**20


def _walk(value):
    """Every tensor and array inside nested dicts, lists and tuples."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def held_by_tracker(results) -> dict:
    """MiB the tracker holds between frames, by part: SAM 2's memory session (per-object outputs and cached features),
    the held frames of the backward pass, the frames' packed masks waiting to be final, the tracks' last masks."""
    tracking = results.gi_frame.f_locals.get("tracking") if results.gi_frame else None
    if tracking is None:
        return {}
    session = tracking.forward.session
    outputs = _tensor_bytes(_walk(session.output_dict_per_obj))
    cached = _tensor_bytes(_walk(vars(session.cache))) + _tensor_bytes(_walk(session.processed_frames or {}))
    held = _tensor_bytes(frame for _, frame in tracking.held)
    pending = sum(a.nbytes for r in tracking.pending.values() for a in (*r.masks.values(), *([r.cut] if r.cut is not None else [])))
    last = sum(bits.nbytes for ids in (tracking.identities, tracking.excluded) for bits, _ in ids._last_bits.values())
    return {"held_mib": {"session_outputs": round(_mib(outputs), 1), "session_features": round(_mib(cached), 1),
                         "held_frames": round(_mib(held), 1), "pending_masks": round(_mib(pending), 2), "last_masks": round(_mib(last), 2)},
            "live_objects": len(session.obj_ids)}


def sam2_files(work: Path, size: int, dino_kind: str = "tiny") -> tuple[Path, Path]:
    """A Grounding DINO release file (tiny, or ``reduced``: Swin-T's and BERT-base's widths with fewer layers, so each
    layer's activations are the release's) and SAM 2.1 tiny (the release file, or a hub folder reading frames at ``size``)."""
    from reference_models import (
        REDUCED_SWINT_DINO,
        TINY_DINO,
        bert_folder,
        meta_sam2,
        original_grounding_dino,
        save_original_release,
        save_sam2_release,
    )

    if dino_kind == "reduced":
        bert = bert_folder(work / "bert-base-width", hidden=768, layers=2, intermediate=3072)
        dino = save_original_release(original_grounding_dino(bert, **REDUCED_SWINT_DINO), work / "groundingdino_reduced.pth")
    else:
        dino = save_original_release(original_grounding_dino(bert_folder(work / "bert"), **TINY_DINO), work / "groundingdino_tiny.pth")
    sam = save_sam2_release(meta_sam2("2.1-tiny", seed=3), work / "sam2.1_hiera_tiny.pt")
    if size == 1024:
        return dino, sam
    from reference_models import sam2_video_at_size

    from grounded_sam import load_sam

    folder = work / f"sam2.1-hiera-tiny-{size}"
    sam2_video_at_size(load_sam(sam, "cpu").video, size).save_pretrained(folder)
    return dino, folder


def sam3_release(work: Path) -> Path:
    """A reduced SAM 3 with its tracker in ``sam3.pt``'s format, its masks centred on the clip's first frame."""
    from reference_models import calibrate_sam3, meta_sam3, save_sam3_release

    from grounded_sam.video.frames import open_frames

    model = meta_sam3(seed=1, interactive=True)
    calibrate_sam3(model, next(iter(open_frames(CLIP))), "bunny")
    return save_sam3_release(model, work / "sam3.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 600])
    parser.add_argument("--size", type=int, default=1024, help="SAM 2.1's input size: 1024 (the release file) or less (a hub folder)")
    parser.add_argument("--family", choices=("sam2", "sam3"), default="sam2",
                        help="sam2: a tiny Grounding DINO and SAM 2.1 tiny; sam3: one reduced SAM 3 in both loaders")
    parser.add_argument("--tracks", type=int, default=2, help="objects tracked from frame 0 (the detector's top boxes, at most this many)")
    parser.add_argument("--dino", choices=("tiny", "reduced"), default="tiny",
                        help="with --family sam2: a tiny Grounding DINO, or Swin-T's widths with fewer layers (its activations as the release's)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), *args.child[1:4], tracks=int(args.child[4]))
        return
    if args.family == "sam3" and args.size != 1024:
        parser.error("--size sets SAM 2.1's input size; SAM 3 reads every frame at its own 1008 pixels: leave --size out")
    work = Path(tempfile.mkdtemp(prefix="track-memory-"))
    if args.family == "sam3":
        dino = sam = sam3_release(work)
    else:
        dino, sam = sam2_files(work, args.size, args.dino)
    results = {}
    for frames in args.frames:
        run = subprocess.run([sys.executable, __file__, "--child", str(frames), str(dino), str(sam), str(work / f"out{frames}"), str(args.tracks)],
                             stdout=subprocess.PIPE, text=True, check=True)  # its progress (stderr) shows as it runs
        results[frames] = json.loads(run.stdout.strip().splitlines()[-1])
        print(frames, results[frames], flush=True)
    short, long = results[min(args.frames)], results[max(args.frames)]
    size = 1008 if args.family == "sam3" else args.size
    ratio = round(long["peak_rss_mib"] / short["peak_rss_mib"], 3)
    print(json.dumps({"family": args.family, "sam_input_size": size, "runs": results, "long_over_short": ratio}, indent=1))


if __name__ == "__main__":
    main()
