"""What a server that runs for days needs: records that keep every field, caches that stay as made and go with
their model, runs in threads that keep to themselves, a cancel that says so, loaded models that go when unused."""

from __future__ import annotations

import gc
import os
import shutil
import threading
import weakref

import numpy as np
import pytest
import torch
from scenes import PROMPT

from grounded_sam import (
    CancelledError,
    Detections,
    DetectionSettings,
    GroundedSam,
    RunHooks,
    load_grounding_dino,
    load_sam,
)
from grounded_sam.comfy.adapter import _clear_caches_when_unloaded
from grounded_sam.comfy.loaded import shared_model
from grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, SegmentedObjects
from grounded_sam.records import PackedMasks


def frame_objects(frame: int, frames: int, with_phrases: bool = True, with_masks: bool = True) -> Detections:
    masks = torch.zeros((2, 6, 8), dtype=torch.bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 3:6, 4:8] = True
    return Detections(
        boxes=torch.tensor([[1.0, 1.0, 4.0, 3.0], [4.0, 3.0, 8.0, 6.0]]), scores=torch.tensor([0.9, 0.8]), labels=("dog", "ball"),
        frame_index=torch.full((2,), frame), image_size=(6, 8), num_frames=frames, masks=masks if with_masks else None,
        phrase_index=torch.tensor([0, 1]) if with_phrases else None,
    )  # fmt: skip


def test_concat_fills_or_refuses_a_field_only_some_parts_have():
    joined = Detections.concat([frame_objects(0, 2), frame_objects(1, 2, with_phrases=False)], 2, (6, 8))
    assert joined.phrase_index.tolist() == [0, 1, -1, -1]  # filled as "phrase not known", never dropped
    with pytest.raises(ValueError, match="only some parts have masks"):
        Detections.concat([frame_objects(0, 2), frame_objects(1, 2, with_masks=False)], 2, (6, 8))
    every = Detections.concat([frame_objects(0, 2, with_masks=False), frame_objects(1, 2, with_masks=False)], 2, (6, 8))
    assert every.masks is None and len(every) == 4
    picked = joined.select(torch.tensor([3, 0]))
    for name, _ in Detections.per_object_fields():  # select keeps every per-object field, row by row
        whole, part = getattr(joined, name), getattr(picked, name)
        if whole is None:  # a field no part has (track_id outside tracking) stays absent
            assert part is None, name
            continue
        assert part == (whole[3], whole[0]) if isinstance(whole, tuple) else torch.equal(part, whole[[3, 0]]), name
    with pytest.raises(ValueError, match="phrase_index has shape"):
        Detections(boxes=torch.zeros((1, 4)), scores=torch.zeros(1), labels=("a",), frame_index=torch.zeros(1, dtype=torch.int64),
                   image_size=(2, 2), num_frames=1, phrase_index=torch.zeros(2, dtype=torch.int64))  # fmt: skip


def test_one_frame_view_and_merged_masks_of_a_two_frame_batch():
    batch = Detections.concat([frame_objects(0, 2), frame_objects(1, 2)], 2, (6, 8))
    second = batch.for_frame(1)
    assert second.num_frames == 1 and second.frame_index.tolist() == [0, 0]
    assert torch.equal(second.merged_masks()[0], batch.masks[2] | batch.masks[3])
    objects = SegmentedObjects.of(batch)
    merged = objects.merged_masks()
    assert merged.shape == (2, 6, 8) and torch.equal(merged, batch.merged_masks().float())
    assert merged[1].any()  # the second frame's mask used to come out empty
    masks, mask, picked, _ = NODE_CLASS_MAPPINGS["PickObjects (segment anything)"]().main(objects, "ball", 1, "score")
    assert torch.equal(mask[1], batch.masks[3].float()) and torch.equal(mask[0], batch.masks[1].float())
    assert picked.detections.frame_index.tolist() == [0, 1] and masks.shape == (2, 6, 8)
    assert torch.equal(PackedMasks.pack(batch.masks).union(torch.tensor([0, 3])), batch.masks[0] | batch.masks[3])


def test_backbone_cache_hits_leave_the_cached_result_as_it_was(detector, bus):
    detector.clear_caches()
    settings = DetectionSettings(0.3, 0.25)
    first = detector.detect(bus, "person", settings)
    (features, positions), = list(detector.backbone_cache._entries.values())
    before = (len(features), len(positions), [t.data_ptr() for t in positions])
    hits = detector.backbone_cache.hits
    for prompt in ("tie", "a bus", "window . wheel", "person"):  # new prompts: the backbone's result is reused
        detector.prediction_cache.clear()
        detector.detect(bus, prompt, settings)
    (again,) = list(detector.backbone_cache._entries.values())
    assert again[0] is features and (len(again[0]), len(again[1]), [t.data_ptr() for t in again[1]]) == before
    assert detector.backbone_cache.hits - hits == 4
    assert torch.equal(detector.detect(bus, "person", settings).boxes, first.boxes)


def test_moving_a_model_empties_its_caches(segmenter, bus):
    segmenter.embed(bus)
    assert len(segmenter.embedding_cache) > 0
    segmenter.to(dtype=torch.float64)
    try:
        assert len(segmenter.embedding_cache) == 0
        segmenter.embed(bus)
        segmenter.to(dtype=torch.float64)  # not a move: the entry stays
        assert len(segmenter.embedding_cache) == 1
    finally:
        segmenter.to(dtype=torch.float32)
    assert len(segmenter.embedding_cache) == 0


def test_a_cancel_that_returns_true_raises_cancelled_error(detector, segmenter, zidane):
    asked = []
    with pytest.raises(CancelledError, match="frame 1 of 1"):
        GroundedSam(detector, segmenter).segment(zidane, PROMPT, DetectionSettings(0.3), RunHooks(check_cancel=lambda: asked.append(1) or len(asked) > 3))
    assert len(asked) == 4  # stopped at the first True, inside the frame


def test_threads_on_one_pipeline_keep_their_own_progress_cancel_and_results(detector, segmenter, bus, zidane):
    """Three runs at once through the same models: two report progress, one cancels itself. Each gets its own."""
    pipeline = GroundedSam(detector, segmenter, "fp32")
    settings = DetectionSettings(0.0, 0.25, max_detections=20)
    alone: dict[str, Detections] = {}
    steps: dict[str, int] = {}
    for name, frame in (("bus", bus), ("zidane", zidane)):  # each run alone, from cold caches
        detector.clear_caches()
        segmenter.clear_caches()
        seen: list[int] = []
        alone[name] = pipeline.segment(frame, PROMPT, settings, RunHooks(on_progress=lambda d, t, seen=seen: seen.append(d)))
        steps[name] = len(seen)
    detector.clear_caches()
    segmenter.clear_caches()
    all_inside = threading.Barrier(3, timeout=60)
    progress: dict[str, list[int]] = {"bus": [], "zidane": []}
    results: dict[str, object] = {}

    def report(name: str, frame: torch.Tensor) -> None:
        def on_progress(done: int, total: int) -> None:
            if not progress[name]:
                all_inside.wait()  # every thread is inside the same model now
            progress[name].append(done)

        results[name] = pipeline.segment(frame, PROMPT, settings, RunHooks(on_progress=on_progress))

    def cancel() -> None:
        calls = []

        def check() -> bool:
            if not calls:
                all_inside.wait()
            calls.append(1)
            return len(calls) > 8  # stops itself after a few layers

        try:
            pipeline.segment(zidane[:, 200:900], PROMPT, settings, RunHooks(check_cancel=check))
        except CancelledError as err:
            results["cancel"] = err

    threads = [threading.Thread(target=report, args=("bus", bus)), threading.Thread(target=report, args=("zidane", zidane)),
               threading.Thread(target=cancel)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert isinstance(results.get("cancel"), CancelledError)  # its own cancel, and only it stopped
    for name in ("bus", "zidane"):
        found, expected = results[name], alone[name]
        assert torch.equal(found.boxes, expected.boxes) and torch.equal(found.masks, expected.masks) and found.labels == expected.labels
        values = progress[name]
        assert values == sorted(values) and values[-1] == 100
        # its own layers' steps: hooks acting on the other runs' layers too would have nearly doubled them
        assert len(values) <= 1.25 * steps[name], (name, len(values), steps[name])


def test_loaded_models_are_shared_while_held_and_freed_when_dropped(tmp_path, sam_checkpoint):
    path = tmp_path / "sam.pth"
    shutil.copy(sam_checkpoint, path)
    loads = []

    def load(p):
        loads.append(p)
        return load_sam(p, "cpu")

    first = shared_model("sams", path, load)
    assert shared_model("sams", path, load) is first and len(loads) == 1
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None  # nothing but the holder kept it
    held = shared_model("sams", path, load)
    shutil.copy(sam_checkpoint, tmp_path / "other.pth")
    os.replace(tmp_path / "other.pth", path)  # the file replaced in place
    assert shared_model("sams", path, load) is not held and len(loads) == 3


def test_a_freed_model_s_memory_is_trimmed_after_its_tensors_are_freed(tmp_path, monkeypatch):
    """glibc keeps freed memory for reuse until it is trimmed. A model in a reference cycle (ComfyUI's patcher makes
    one) is finalized before the collector frees its tensors, so a trim in the finalizer alone comes too early."""
    from grounded_sam.runtime import freed_memory

    class Model:
        pass

    def load(_path):
        model = Model()
        # a NumPy array: it takes no part in the collector's bookkeeping, so it lives until the cycle is cleared, as
        # a tensor's memory does (a weak reference to a tensor in the cycle would be cleared before the finalizer)
        model.cycle, model.weight = model, np.ones(1 << 20, dtype=np.float32)
        return model

    path = tmp_path / "model.pth"
    path.write_bytes(b"held")
    model = shared_model("sams", path, load)
    weight = weakref.ref(model.weight)
    alive_at_each_trim = []
    real = freed_memory._TRIM

    def spy(pad: int) -> int:
        alive_at_each_trim.append(weight() is not None)
        return real(pad) if real is not None else 0

    monkeypatch.setattr(freed_memory, "_TRIM", spy)
    del model
    gc.collect()
    assert weight() is None and alive_at_each_trim, "the model was not freed, or nothing was trimmed"
    assert alive_at_each_trim[-1] is False, f"the last trim ran while the tensors were alive: {alive_at_each_trim}"


def test_a_file_replaced_inside_a_model_folder_is_loaded_anew(tmp_path, mm_folder):
    folder = tmp_path / "mm"
    shutil.copytree(mm_folder, folder)
    held = shared_model("grounding-dino", folder, lambda p: load_grounding_dino(p, "cpu"))
    assert shared_model("grounding-dino", folder, lambda p: pytest.fail("loaded again")) is held
    os.utime(folder, ns=(0, 0))  # the folder's own time says nothing: a file inside changes
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert shared_model("grounding-dino", folder, lambda p: load_grounding_dino(p, "cpu")) is not held


def test_the_unload_callback_does_not_keep_the_model_alive(sam_checkpoint):
    model = load_sam(sam_checkpoint, "cpu")
    callback = _clear_caches_when_unloaded(model)
    gone = weakref.ref(model)
    del model
    assert gone() is None  # freed at once, without waiting for the cyclic collector
    callback(None, True)  # and the callback copes


def test_freed_and_offloaded_models_leave_nothing_in_transformers_caches(sam2_tiny, bus):
    """transformers caches SAM 2's position embedding (64 MiB at 1024 pixels) for the process; a model that is
    offloaded (``clear_caches``) or freed must not leave it behind."""
    from grounded_sam.runtime.transformers_caches import cached_entries

    boxes = torch.tensor([[100.0, 200.0, 600.0, 900.0]])
    held = shared_model("sams", sam2_tiny[1], lambda p: load_sam(p, "cpu"))
    held.masks_for_boxes(held.embed(bus), boxes)
    assert cached_entries() > 0  # what the model's run left there
    held.clear_caches()  # as ComfyUI's unload callback does
    assert cached_entries() == 0
    held.masks_for_boxes(held.embed(bus), boxes)
    assert cached_entries() > 0
    gone = weakref.ref(held)
    del held
    gc.collect()
    assert gone() is None and cached_entries() == 0


KERNELS_PER_SHAPE = """
import gc, sys
import torch
if sys.argv[1] == "pack":
    import grounded_sam.comfy  # what ComfyUI does when it loads the pack, before any model runs
from grounded_sam.runtime.freed_memory import release_freed_memory
def anon_mib():
    gc.collect()
    release_freed_memory()
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024
layer = torch.nn.Linear(64, 96)
start = anon_mib()
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    for rows in range(1, int(sys.argv[2]) + 1):  # an input shape each
        layer(torch.rand(rows, 64))
print(anon_mib() - start)
"""


def kernels_kept(mode: str, shapes: int, env: dict[str, str]) -> float:
    """MiB a fresh process keeps after ``shapes`` bf16 linears of distinct shapes, with torch alone or the pack loaded."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", KERNELS_PER_SHAPE, mode, str(shapes)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def test_the_pack_bounds_torch_s_kernel_caches_for_a_server_that_sees_many_shapes(monkeypatch):
    """torch keeps a CPU bf16 kernel per input shape in two caches that nothing frees (1024 each by default). A
    ComfyUI server sees ever new image sizes and prompt lengths: the pack bounds both when it loads."""
    from grounded_sam.runtime.kernel_caches import (
        KERNEL_CACHE_ENTRIES,
        KERNEL_CACHE_VARIABLES,
        THREAD_KERNEL_CACHE_ENTRIES,
        bound_kernel_caches,
    )

    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
    # 1300 shapes: more than the 1024 kernels torch keeps by default
    unbounded, bounded = kernels_kept("torch alone", 1300, clean), kernels_kept("pack", 1300, clean)
    if unbounded < 64:
        pytest.skip(f"torch kept {unbounded:.0f} MiB for 1300 bf16 shapes on this CPU: nothing to bound")
    assert bounded < 0.5 * unbounded, f"the pack's bound kept {bounded:.0f} MiB of kernels, torch alone {unbounded:.0f} MiB"
    # a size the user set is theirs: kept, never replaced
    for name in KERNEL_CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DNNL_PRIMITIVE_CACHE_CAPACITY", "4096")
    assert bound_kernel_caches() == {"LRU_CACHE_CAPACITY": str(THREAD_KERNEL_CACHE_ENTRIES)}
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    monkeypatch.delenv("DNNL_PRIMITIVE_CACHE_CAPACITY")
    monkeypatch.delenv("LRU_CACHE_CAPACITY")
    with pytest.raises(ValueError, match="1 or more"):
        bound_kernel_caches(per_thread=0)  # torch crashes on an ideep cache of 0
    assert bound_kernel_caches()["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE_ENTRIES)


def test_the_server_thread_s_own_kernel_cache_stays_a_handful():
    """ideep keeps its kernels per thread, in front of oneDNN's process-wide cache, and ComfyUI runs every prompt
    on one thread that lives as long as the server. Measured apart from oneDNN's (turned off, as a user may), it
    keeps what 400 shapes built with torch's size, and a handful with the pack's."""
    from grounded_sam.runtime.kernel_caches import KERNEL_CACHE_VARIABLES

    env = {**{k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}
    unbounded, bounded = kernels_kept("torch alone", 400, env), kernels_kept("pack", 400, env)
    if unbounded < 32:
        pytest.skip(f"torch kept {unbounded:.0f} MiB for 400 bf16 shapes on this CPU: nothing to bound")
    assert bounded < 0.1 * unbounded, f"the thread's cache kept {bounded:.0f} MiB with the pack's size, {unbounded:.0f} MiB with torch's"


HOLES_IN_THE_HEAP = """
import torch
from grounded_sam.runtime.freed_memory import trim_freed_heap
def anon_mib():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024
blocks = [torch.ones(16 * 1024) for _ in range(2048)]  # 64 KiB each, below glibc's mmap threshold: in its heap
del blocks[::2]  # 64 MiB freed in holes between live blocks: nothing at the heap's top for glibc to give back itself
kept = anon_mib()
trim_freed_heap()
print(kept - anon_mib())
"""


def test_trimming_hands_back_the_pages_freed_between_live_tensors():
    """Tracking on a CPU frees and allocates tensors every frame; glibc keeps the freed pages that lie between live
    ones, so RSS climbs while what is live stays flat, unless the heap is trimmed (which the tracker does per frame)."""
    import subprocess
    import sys

    from grounded_sam.runtime import freed_memory

    if freed_memory._TRIM is None:
        pytest.skip("the C library is not glibc: there is no heap to trim")
    done = subprocess.run([sys.executable, "-c", HOLES_IN_THE_HEAP], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    handed_back = float(done.stdout.split()[-1])
    assert handed_back >= 48, f"trimming handed back {handed_back:.1f} MiB of the 64 MiB freed between live blocks"


def test_segmenting_on_a_cpu_hands_back_each_frame_s_freed_heap(detector, segmenter, bus, monkeypatch):
    """A server segments prompt after prompt; on a CPU each frame's freed tensors stay in glibc's heap unless it is
    trimmed, so the pipeline trims after every frame, before the frame is reported done, as the tracker does."""
    from grounded_sam.runtime import freed_memory

    frames = torch.stack([bus, bus.flip(1), bus])  # three [H, W, C] frames
    progress: list[int] = []  # hundredths of a frame
    worked_on_at_each_trim: list[int] = []
    real = freed_memory._TRIM

    def spy(pad: int) -> int:
        worked_on_at_each_trim.append(-(-max(progress, default=0) // 100))  # the frames whose work was reported
        return real(pad) if real is not None else 0

    monkeypatch.setattr(freed_memory, "_TRIM", spy)
    pipeline = GroundedSam(detector, segmenter).to("cpu")
    assert pipeline.frees_into_host_heap()
    found = pipeline.segment(frames, PROMPT, DetectionSettings(0.0, max_detections=2), RunHooks(on_progress=lambda done, _total: progress.append(done)))
    assert found.frame_index.tolist() == [0, 0, 1, 1, 2, 2] and found.merged_masks().any()
    assert worked_on_at_each_trim == [1, 2, 3], f"frames worked on at each heap trim: {worked_on_at_each_trim} (one after each of 3 frames)"
