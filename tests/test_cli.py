"""The command line: model files in, mask PNGs and a detections JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from scenes import PROMPT, top_score

import grounded_sam
from grounded_sam import Detections, DetectionSettings, GroundedSam
from grounded_sam.cli import REFINE_CHOICES, build_parser, main
from grounded_sam.media.images import load_image_file
from grounded_sam.media.inputs import output_stems
from grounded_sam.media.outputs import SegmentReport
from grounded_sam.media.preview import draw_preview


def test_segment_writes_masks_and_json(tmp_path, detector, segmenter, dino_checkpoint, sam_checkpoint, bus):
    image_path = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image_path)
    # a thing to leave out with a few boxes among the kept ones' (each is segmented to be cut out), whatever the random weights find
    for leave in ("bus", "window", "wheel", "sky", "road", "shadow", "sign"):
        every = detector.detect(bus, f"{PROMPT} . {leave}", DetectionSettings(0.0, 0.0, nms_iou=None))  # as run with --exclude
        threshold = float(every.scores[every.phrase_index < 2].max()) - 0.01  # a few kept objects
        if 1 <= int((every.scores[every.phrase_index == 2] > threshold).sum()) <= 8:
            break
    out = tmp_path / "out"
    code = main(
        ["segment", str(image_path), "--prompt", PROMPT, "--dino", str(dino_checkpoint), "--sam", str(sam_checkpoint),
         "--out", str(out), "--box-threshold", str(threshold), "--text-threshold", str(threshold - 0.02), "--per-object",
         "--preview", "--exclude", leave]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    objects = report[0]["objects"]
    assert len(objects) >= 1
    frame = load_image_file(image_path)
    settings = DetectionSettings(threshold, threshold - 0.02)
    expected = GroundedSam(detector, segmenter).segment(frame, PROMPT, settings, exclude=leave)
    assert report[0]["preview_file"] == "bus_preview.png"
    assert np.array_equal(np.asarray(Image.open(out / "bus_preview.png")), draw_preview(frame[0], expected).numpy())
    written = np.asarray(Image.open(out / "bus_mask.png")) > 0
    assert np.array_equal(written, expected.merged_masks()[0].numpy())
    first = np.asarray(Image.open(out / objects[0]["mask_file"])) > 0
    assert np.array_equal(first, expected.masks[0].numpy())
    assert objects[0]["box_xyxy"] == [round(v, 3) for v in expected.boxes[0].tolist()]


def _run(tmp_path, dino_checkpoint, sam_checkpoint, images, *extra, out_name="out"):
    out = tmp_path / out_name
    code = main(["segment", *map(str, images), "--prompt", PROMPT, "--dino", str(dino_checkpoint), "--sam", str(sam_checkpoint),
                 "--out", str(out), "--models-dir", str(tmp_path / "models"), *extra])  # fmt: skip
    return code, out


def test_same_names_in_two_folders_bad_images_and_progress(tmp_path, capsys, detector, segmenter, dino_checkpoint, sam_checkpoint, bus, zidane):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(bus.numpy()).save(tmp_path / "a" / "img.png")
    Image.fromarray(zidane.numpy()).save(tmp_path / "b" / "img.png")
    whole = (tmp_path / "a" / "img.png").read_bytes()
    (tmp_path / "a" / "truncated.png").write_bytes(whole[: len(whole) // 3])  # a valid header: fails only when decoded
    (tmp_path / "a" / "notes.jpg").write_text("not an image")
    images = [tmp_path / "a" / "img.png", tmp_path / "a" / "truncated.png", tmp_path / "missing.jpg", tmp_path / "a" / "notes.jpg",
              tmp_path / "b" / "img.png"]  # fmt: skip
    threshold = min(top_score(detector, bus), top_score(detector, zidane)) - 0.01
    code, out = _run(tmp_path, dino_checkpoint, sam_checkpoint, images, "--box-threshold", str(threshold), "--precision", "fp16")
    captured = capsys.readouterr()
    assert code == 1  # some images failed, the others are written
    report = json.loads((out / "detections.json").read_text())
    assert [entry["image"] for entry in report] == [str(p) for p in images]  # every input, in order
    assert [("error" in entry) for entry in report] == [False, True, True, True, False]
    assert "missing.jpg" in report[2]["error"] and "not found" in report[2]["error"]
    assert "not an image" in report[3]["error"]
    assert report[0]["mask_file"] == "a/img_mask.png" and report[4]["mask_file"] == "b/img_mask.png"
    pipeline = GroundedSam(detector, segmenter)
    for entry, frame in ((report[0], bus), (report[4], zidane)):
        expected = pipeline.segment(frame, PROMPT, DetectionSettings(threshold, 0.25))
        assert np.array_equal(np.asarray(Image.open(out / entry["mask_file"])) > 0, expected.merged_masks()[0].numpy())
        assert (entry["height"], entry["width"]) == tuple(frame.shape[:2]) and len(entry["objects"]) == len(expected)
    # the progress bar moves inside an image, by stage and mask chunk, with a rate and ETA over the list
    assert "detecting" in captured.err and "encoding image" in captured.err and "masks " in captured.err
    assert "/3 images" in captured.err  # the three that passed the header checks and ("img/s" in captured.err or "s/img" in captured.err)
    assert "fp16 on a CPU" in captured.err and "on cpu, fp32" in captured.err
    assert "2 of 5 image(s) written" in captured.err and "Traceback" not in captured.err


def test_checks_before_any_model_loads(tmp_path, capsys, bus):
    image = tmp_path / "bus.png"
    Image.fromarray(bus.numpy()).save(image)
    models = ["--dino", "GroundingDINO_SwinT_OGC (694MB)", "--sam", "nowhere.pth", "--models-dir", str(tmp_path / "models")]

    def run(*args: str) -> str:
        assert main(["segment", *args, *models]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "the prompt is empty" in run(str(image), "--prompt", " . ", "--out", str(tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    err = run(str(tmp_path / "gone.jpg"), str(tmp_path / "empty"), "--prompt", "bus", "--out", str(tmp_path / "o"))
    assert "no image to segment" in err and "gone.jpg" in err and "folder with no images" in err and "models" not in err
    # a missing image next to a good one: reported before the models are looked for
    err = run(str(tmp_path / "gone.jpg"), str(image), "--prompt", "bus", "--out", str(tmp_path / "o"))
    assert err.index("gone.jpg") < err.index("nowhere.pth")
    (tmp_path / "taken").write_text("a file")
    assert "is a file: give a folder" in run(str(image), "--prompt", "bus", "--out", str(tmp_path / "taken"))
    assert "box_threshold must be between 0 and 1" in run(str(image), "--prompt", "bus", "--out", str(tmp_path / "o"), "--box-threshold", "2")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in run(str(image), "--prompt", "bus", "--out", str(tmp_path / "o"), "--device", "cuda")
    # both models missing: one error names both, with where to put them
    err = run(str(image), "--prompt", "bus", "--out", str(tmp_path / "o"), "--no-download")
    assert "groundingdino_swint_ogc.pth" in err and str(tmp_path / "models" / "grounding-dino") in err
    assert "huggingface.co/ShilongLiu/GroundingDINO" in err
    assert "nowhere.pth" in err and str(tmp_path / "models" / "sams") in err


def test_help_and_version_import_no_torch():
    script = (
        "import sys, contextlib, io\n"
        "from grounded_sam.cli import build_parser\n"
        "for args in (['--help'], ['segment', '--help'], ['label', '--help'], ['merge', '--help'], ['eval', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        build_parser().parse_args(args)\n"
        "    print(out.getvalue())\n"
        "print('heavy:', [m for m in ('torch', 'transformers', 'numpy', 'PIL') if m in sys.modules])\n"
    )
    text = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "heavy: []" in text
    assert "(default: 0.3)" in text and "(default: auto)" in text and "image files or folders" in text
    assert "--shard" in text and "--ray auto|ADDRESS" in text and "SHARD_DIR" in text and "--gt" in text
    assert f"grounded-sam {grounded_sam.__version__}" in text


def test_report_is_valid_json_after_every_image_and_numbers_sort(tmp_path):
    n = 101
    masks = torch.zeros((n, 4, 6), dtype=torch.bool)
    masks[:, 1, 2] = True
    found = Detections(
        boxes=torch.tensor([[0.0, 0.0, 6.0, 4.0]]).repeat(n, 1), scores=torch.linspace(0.9, 0.5, n), labels=("red ball",) * n,
        frame_index=torch.zeros(n, dtype=torch.int64), image_size=(4, 6), num_frames=1, masks=masks,
    )  # fmt: skip
    with SegmentReport(tmp_path, per_object=True) as report:
        assert json.loads((tmp_path / "detections.json").read_text()) == []
        report.add_result(Path("x/a.png"), PurePosixPath("x/a"), found)
        after_one = json.loads((tmp_path / "detections.json").read_text())
        assert len(after_one) == 1 and len(after_one[0]["objects"]) == n
        report.add_error(Path("b.png"), "cannot read it")
        assert json.loads((tmp_path / "detections.json").read_text())[1] == {"image": "b.png", "error": "cannot read it"}
    names = [row["mask_file"] for row in after_one[0]["objects"]]
    assert names[0] == "x/a_object000_red-ball.png" and names[100] == "x/a_object100_red-ball.png"
    assert sorted(names) == names
    assert (np.asarray(Image.open(tmp_path / names[7])) == masks[7].numpy() * 255).all()


def test_output_names_never_collide(tmp_path):
    paths = [tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.jpg", tmp_path / "a" / "img.png", tmp_path / "a" / "img.PNG",
             tmp_path / "a" / "c" / "d.jpg"]  # fmt: skip
    stems = [str(s) for s in output_stems(paths)]
    assert stems == ["a/img_jpg", "b/img", "a/img_png", "a/img_PNG", "a/c/d"]
    assert [str(s) for s in output_stems([tmp_path / "x.jpg"])] == ["x"]
    assert len(set(output_stems([tmp_path / "a" / "IMG.png", tmp_path / "a" / "IMG.PNG", tmp_path / "a" / "IMG_png.png"]))) == 3


def test_refined_masks_and_cutout(tmp_path, detector, segmenter, dino_checkpoint, sam_checkpoint, bus):
    """--refine writes the masks as soft 8-bit alpha, --cutout an RGBA picture with the objects' own colours: the library's."""
    from grounded_sam.matting import MATTING_METHODS, RefineSettings, refine_alpha

    frame = bus[:480, :640].contiguous()
    image_path = tmp_path / "crop.png"
    Image.fromarray(frame.numpy()).save(image_path)
    threshold = top_score(detector, frame) - 0.01
    code, out = _run(tmp_path, dino_checkpoint, sam_checkpoint, [image_path], "--box-threshold", str(threshold), "--refine", "guided_filter",
                     "--cutout", "--per-object", "--no-progress")  # fmt: skip
    assert code == 0
    found = GroundedSam(detector, segmenter).segment(frame, PROMPT, DetectionSettings(threshold, 0.25))
    settings = RefineSettings("guided_filter")  # random weights give speckled masks: the fast method
    parsed = build_parser().parse_args(["segment", "x.png", "--prompt", "a", "--dino", "d", "--sam", "s", "--out", "o", "--refine", "closed_form"])
    assert RefineSettings(parsed.refine, parsed.detail_erode, parsed.detail_dilate, parsed.black_point, parsed.white_point,
                          parsed.max_megapixels) == RefineSettings()  # fmt: skip  # the command's defaults are the library's
    assert sorted(REFINE_CHOICES) == sorted(MATTING_METHODS)  # the command's list, kept apart for a fast --help, is the library's

    def as_png(alpha: np.ndarray) -> np.ndarray:
        return np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)

    merged = refine_alpha(frame.numpy(), found.merged_masks()[0].numpy(), settings)
    written = np.asarray(Image.open(out / "crop_mask.png"))
    assert np.array_equal(written, as_png(merged.alpha))
    assert ((written > 0) & (written < 255)).mean() > 0.001, "the refined mask must be soft somewhere"
    cutout = np.asarray(Image.open(out / "crop_cutout.png"))
    assert cutout.shape == (480, 640, 4) and np.array_equal(cutout[..., 3], written)
    assert np.array_equal(cutout[..., :3], as_png(merged.foreground))
    report = json.loads((out / "detections.json").read_text())
    first = np.asarray(Image.open(out / report[0]["objects"][0]["mask_file"]))
    assert np.array_equal(first, as_png(refine_alpha(frame.numpy(), found.masks[0].numpy(), settings).alpha))
