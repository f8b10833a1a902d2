"""``grounded-sam segment IMAGE... --prompt "dog . ball" --dino PATH --sam PATH --out DIR``.

Everything that can be checked without the models (settings, prompt, images, output folder,
model files) is checked before they load, and every problem found is reported at once. Heavy
imports (torch, transformers) wait until a command runs, so ``--help`` is instant.

Exit status: 0 when every image was written, 1 when some images failed (the others are written
and listed in detections.json), 2 when nothing could run (bad settings, models or output folder).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import GroundedSamError, InputError, ModelFileError, ModelNotFoundError
from .labeling.commands import (
    add_eval_arguments,
    add_label_arguments,
    add_merge_arguments,
    run_eval,
    run_label,
    run_merge,
)
from .model_files.folders import DINO_FOLDER, MODELS_DIR_ENV, SAM_FOLDER, default_models_dir
from .runtime.devices import DEVICE_CHOICES_HELP, PRECISION_CHOICES
from .runtime.kernel_caches import bound_kernel_caches

EXIT_OK, EXIT_SOME_FAILED, EXIT_NOTHING_RAN = 0, 1, 2
EXIT_STOPPED_PARTWAY = 3  # track: an error mid-clip; the frames before it are written (Ctrl-C: 130)
EXIT_INTERRUPTED = 130
REFINE_CHOICES = ("closed_form", "guided_filter", "vitmatte", "none")  # matting.MATTING_METHODS, without importing it for --help


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grounded-sam")
    except PackageNotFoundError:
        from . import __version__

        return __version__


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" only where there is a default worth showing (not for flags or required options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, "") or action.required:
            return action.help or ""
        return super()._get_help_string(action)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The models and detection settings, the same for every command that runs the models."""
    parser.add_argument("--dino", required=True, help="Grounding DINO file/folder, or a model name in --models-dir")
    parser.add_argument("--sam", required=True, help="SAM, HQ-SAM, MobileSAM or SAM 2/2.1 file or folder, or a model name in --models-dir")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir() or Path("models"),
                        help=f"a ComfyUI-style models folder: <dir>/grounding-dino, <dir>/sams (env {MODELS_DIR_ENV} sets the default)")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES_HELP}; auto is CUDA, then MPS, then the CPU")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="fp32 is exact; bf16/fp16 are faster on GPUs, masks differ slightly; auto is bf16 on GPUs "
                             "that run it fast (CUDA compute capability >= 8.0), else fp32; on a CPU, fp16 runs as fp32, and so "
                             "does bf16 without native bf16 (AVX512-BF16 or AMX)")
    parser.add_argument("--box-threshold", type=float, default=0.3, help="keep boxes scoring above this")
    parser.add_argument("--text-threshold", type=float, default=0.25, help="prompt words scoring above this make a box's label")
    parser.add_argument("--nms-iou", type=float, default=0.7, help="non-maximum suppression IoU; 1.0 disables it")
    parser.add_argument("--max-detections", type=int, default=0, help="keep the best N per image; 0 keeps every detection")
    parser.add_argument("--no-download", action="store_true", help="never download a missing known model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (results are still printed per image)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grounded-sam", description="Text-prompted image segmentation: Grounding DINO + Segment Anything.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment",
        help="write one mask PNG per image (and per object) plus detections.json",
        description="Find the objects named by --prompt in each image; write its merged mask (and one per object) and detections.json.",
        formatter_class=_DefaultsHelp,
    )
    seg.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                     help="image files or folders (a folder's images are taken recursively; outputs keep the folder layout)")
    seg.add_argument("--prompt", required=True, help='objects to find, separated by " . ", e.g. "dog . red ball"')
    seg.add_argument("--exclude", default="", help='things to leave out, e.g. "bag . shadow": found in the same pass and cut out of every mask')
    seg.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    _model_arguments(seg)
    seg.add_argument("--per-object", action="store_true", help="also write one mask PNG per detected object")
    seg.add_argument("--preview", action="store_true", help="also write <name>_preview.png: each object's mask, box and label drawn on the image")
    seg.add_argument("--refine", choices=REFINE_CHOICES, default=None,
                     help="soft edges: write the masks as 8-bit alpha refined by this method (closed_form and guided_filter need no "
                          "weights; vitmatte needs a ViTMatte folder, --vitmatte)")
    seg.add_argument("--vitmatte", default="vitmatte-small-composition-1k",
                     help="for --refine vitmatte: a ViTMatte folder, or a model name in --models-dir/vitmatte")
    seg.add_argument("--detail-erode", type=float, default=12.0, help="refine band inside the mask's edge, pixels of a 1024-pixel image")
    seg.add_argument("--detail-dilate", type=float, default=24.0, help="refine band outside the mask's edge, pixels of a 1024-pixel image")
    seg.add_argument("--black-point", type=float, default=0.01, help="alpha at or below this becomes 0")
    seg.add_argument("--white-point", type=float, default=0.99, help="alpha at or above this becomes 1")
    seg.add_argument("--max-megapixels", type=float, default=1.0, help="refine larger images at this size, then bring the alpha back up")
    seg.add_argument("--points", default="", help='clicks on an object, pixels "x,y;x,y": each refines the object whose box holds it; '
                     "clicks in no box make one more object (label \"clicked\")")
    seg.add_argument("--negative-points", default="", help='clicks off an object, "x,y;x,y", in the same way')
    seg.add_argument("--cutout", action="store_true",
                     help="also write <name>_cutout.png: RGBA, the objects' own colours (no fringe of the old background)")
    track = sub.add_parser(
        "track",
        help="follow the objects of --prompt through a video (or a folder of frames) with stable ids",
        description="Track the objects named by --prompt through CLIP (a video file or a folder of frames) with SAM 2's "
                    "video memory: tracks.json and tracks.mot.txt (MOT Challenge) are current after every frame. A run "
                    "stopped partway writes every frame it had segmented and ends tracks.json with where and why it "
                    "stopped; exit status 0 done, 2 nothing ran, 3 an error partway (the frames before it written), "
                    "130 Ctrl-C.",
        formatter_class=_DefaultsHelp,
    )
    track.add_argument("clip", type=Path, help="a video file (anything PyAV decodes) or a folder of frames")
    track.add_argument("--prompt", required=True, help='objects to find, separated by " . ", e.g. "person . dog"')
    track.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    track.add_argument("--exclude", default="", help='things to leave out, e.g. "shadow . reflection": tracked too, and cut out of every mask')
    track.add_argument("--redetect-every", type=int, default=10, help="run the detector on frame 0 and every N frames after")
    track.add_argument("--backtrack", type=int, default=None,
                       help="frames an object first found late is followed backwards (default: --redetect-every; 0: none)")
    track.add_argument("--masks", choices=("none", "png", "video"), default="none",
                       help="also write the masks: png = masks/NNNNNN.png (16-bit track ids), video = lossless masks.mkv")
    track.add_argument("--preview", action="store_true", help="also write preview.mp4 with ids, labels and masks drawn")
    _model_arguments(track)
    label = sub.add_parser(
        "label",
        help="label a dataset: COCO (and YOLO) files, streamed, resumable, on one machine, shards or a Ray cluster",
        description="Label every image with the objects named by --prompt (one category per phrase). Each image's result "
                    "is written as it finishes (results.jsonl); re-running the same command resumes; bad images go to "
                    "errors.jsonl; coco.json (and yolo/) are assembled at the end.",
        formatter_class=_DefaultsHelp,
    )
    add_label_arguments(label, _model_arguments)
    merge = sub.add_parser("merge", help="join the folders of --shard runs into one job", formatter_class=_DefaultsHelp)
    add_merge_arguments(merge)
    evaluate = sub.add_parser("eval", help="COCO mask and box AP of a labelling run against ground truth", formatter_class=_DefaultsHelp)
    add_eval_arguments(evaluate)
    return parser


def _error(message: str) -> None:
    print(f"grounded-sam: error: {message}", file=sys.stderr)


class _DownloadBar:
    """A tqdm bar that appears only if a download really starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=f"downloading {self.name}")
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _find_models(args: argparse.Namespace) -> tuple[Path, Path]:
    """Both model paths; every model that is missing (and cannot be fetched) is reported in one error."""
    from .model_files.folders import is_known, resolve_model, searched_folders

    wanted = {"Grounding DINO (--dino)": (args.dino, DINO_FOLDER), "SAM (--sam)": (args.sam, SAM_FOLDER)}
    dirs = {folder: [args.models_dir / name for name in searched_folders(folder)] for _, folder in wanted.values()}
    found, to_fetch, problems = {}, [], []
    for role, (name, folder) in wanted.items():
        try:
            found[role] = resolve_model(name, folder, dirs[folder], allow_download=False)
        except ModelNotFoundError as err:
            if is_known(name) and not args.no_download:
                to_fetch.append(role)
            else:
                problems.append(f"{role}: {err}")
        except ModelFileError as err:
            problems.append(f"{role}: {err}")
    if problems:
        raise ModelNotFoundError("\n  ".join(["model files are missing or wrong:", *problems]))
    for role in to_fetch:
        name, folder = wanted[role]
        with _DownloadBar(str(name)) as bar:
            found[role] = resolve_model(name, folder, dirs[folder], allow_download=True, on_progress=bar.update)
    return found["Grounding DINO (--dino)"], found["SAM (--sam)"]


def _find_vitmatte(args: argparse.Namespace) -> Path:
    from .model_files.folders import VITMATTE_FOLDER, resolve_model

    with _DownloadBar(str(args.vitmatte)):
        return resolve_model(args.vitmatte, VITMATTE_FOLDER, [args.models_dir / VITMATTE_FOLDER], allow_download=not args.no_download)


def _refiner(settings, vitmatte_path: Path | None, device: str):  # noqa: ANN001, ANN202 - matting.RefineSettings -> (image, mask) -> Matte
    """What turns a mask into a soft matte for the report, or None without ``--refine``."""
    if settings is None:
        return None
    from .matting import load_vitmatte, refine_alpha

    model = load_vitmatte(vitmatte_path, device) if vitmatte_path is not None else None
    return lambda image, mask: refine_alpha(image, mask, settings, model)


def _load_models(dino_path: Path, sam_path: Path, device: str):
    """Both models, or one error naming every file that would not load."""
    from .loaders import load_grounding_dino, load_sam

    loaded, problems = [], []
    for loader, path in ((load_grounding_dino, dino_path), (load_sam, sam_path)):
        try:
            loaded.append(loader(path, device=device))
        except ModelFileError as err:
            problems.append(str(err))
    if problems:
        raise ModelFileError("\n  ".join(["cannot load the models:", *problems]))
    return loaded


def _check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {out}: {err.strerror or err}") from err


def run_segment(args: argparse.Namespace) -> int:
    from .media.inputs import expand_images
    from .media.outputs import SegmentReport
    from .prompts import Prompt
    from .runtime.devices import resolve_device
    from .runtime.terminal_bar import ImagesBar
    from .settings import DetectionSettings

    # checks that need no model: each raises a clear error before anything loads
    settings = DetectionSettings(args.box_threshold, args.text_threshold, args.nms_iou, args.max_detections or None)
    Prompt.parse(args.prompt, args.exclude)
    from .clicks import Clicks, points_from_text

    clicks = Clicks.of(points_from_text(args.points, "--points"), points_from_text(args.negative_points, "--negative-points"))
    refine = None
    if args.refine is not None:
        from .matting import RefineSettings

        refine = RefineSettings(args.refine, args.detail_erode, args.detail_dilate, args.black_point, args.white_point, args.max_megapixels)
    device = resolve_device(args.device)
    images, notes = expand_images(args.images)
    for note in notes:
        print(f"grounded-sam: note: {note}", file=sys.stderr)
    bad = [image for image in images if image.problem]
    if len(bad) == len(images):
        raise InputError("no image to segment:\n  " + "\n  ".join(image.problem for image in bad))
    for image in bad:
        _error(f"{image.problem} (skipped)")
    _check_output_folder(args.out)
    dino_path, sam_path = _find_models(args)
    vitmatte_path = _find_vitmatte(args) if refine is not None and refine.method == "vitmatte" else None

    from .media.images import load_image_file
    from .pipeline import GroundedSam

    detector, segmenter = _load_models(dino_path, sam_path, str(device))
    pipeline = GroundedSam(detector, segmenter, args.precision)
    print(f"grounded-sam: {detector.name} + {segmenter.name} on {device}, {pipeline.effective_precision()}", file=sys.stderr)
    failed = len(bad)
    runnable = len(images) - len(bad)
    with SegmentReport(args.out, args.per_object, args.preview, _refiner(refine, vitmatte_path, str(device)), args.cutout) as report, \
            ImagesBar(runnable, enabled=not args.no_progress) as bar:
        position = 0  # among the runnable images: what the bar, its rate and its ETA count
        for image in images:  # in input order, so the report lists every input where it was given
            if image.problem:
                report.add_error(image.path, image.problem)
                continue
            try:
                hooks = bar.image(position, str(image.output_stem))
                frame = load_image_file(image.path)
                found = pipeline.segment(frame, args.prompt, settings, hooks, args.exclude, clicks if len(clicks) else None)
                entry = report.add_result(image.path, image.output_stem, found, frame[0])
                bar.write(f"{image.path}: {len(entry['objects'])} object(s) -> {args.out / entry['mask_file']}")
            except Exception as err:  # noqa: BLE001 - this image only: the others go on, the report keeps it
                failed += 1
                message = str(err) if isinstance(err, GroundedSamError) else f"{type(err).__name__}: {err}"
                report.add_error(image.path, message)
                bar.write(f"grounded-sam: error: {image.path}: {message} (skipped)", file=sys.stderr)
            bar.done(position)
            position += 1
    done = len(images) - failed
    print(f"grounded-sam: {done} of {len(images)} image(s) written to {args.out}" + (f", {failed} failed" if failed else ""),
          file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run_track(args: argparse.Namespace) -> int:
    from .prompts import Prompt
    from .runtime.devices import resolve_device
    from .settings import DetectionSettings

    settings = DetectionSettings(args.box_threshold, args.text_threshold, args.nms_iou, args.max_detections or None)
    Prompt.parse(args.prompt, args.exclude)
    if args.redetect_every < 1:
        raise InputError(f"--redetect-every must be >= 1 (1: detect on every frame), got {args.redetect_every}")
    if args.backtrack is not None and args.backtrack < 0:
        raise InputError(f"--backtrack must be >= 0, got {args.backtrack}")
    device = resolve_device(args.device)
    from .video.frames import open_frames

    clip = open_frames(args.clip)  # a missing or undecodable clip fails before the models load
    _check_output_folder(args.out)
    dino_path, sam_path = _find_models(args)
    from .pipeline import GroundedSam
    from .runtime.terminal_bar import ImagesBar
    from .video.tracker import frames_held_after
    from .video.writer import TrackWriter

    detector, segmenter = _load_models(dino_path, sam_path, str(device))
    pipeline = GroundedSam(detector, segmenter, args.precision)
    print(f"grounded-sam: {detector.name} + {segmenter.name} on {device}, {pipeline.effective_precision()}", file=sys.stderr)
    held: dict[int, object] = {}

    def remember(frames):
        for index, frame in enumerate(frames):  # the preview draws on a frame when its result is final
            if args.preview:
                held[index] = frame
            yield frame

    with TrackWriter(args.out, args.masks, args.preview, clip.fps or 25.0) as writer, \
            ImagesBar(clip.count or 0, enabled=not args.no_progress, unit="frames") as bar:
        results = pipeline.track(remember(clip), args.prompt, settings, args.exclude or None, args.redetect_every,
                                 args.backtrack, hooks=bar.clip())
        try:
            for found in results:
                writer.add(writer.frames, held.pop(writer.frames, None), found)
                bar.done(writer.frames - 1)
        except BaseException as stop:  # an error, a cancel or Ctrl-C: the frames the run held are written first
            for found in frames_held_after(results, stop):
                writer.add(writer.frames, held.pop(writer.frames, None), found)
            if writer.frames == 0 and not isinstance(stop, KeyboardInterrupt):
                raise  # nothing was tracked: the error as before a run
            reason = "stopped by Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop) or type(stop).__name__
            writer.stopped(reason)
            bar.close()
            _error(f"{reason}; tracks.json and tracks.mot.txt hold the {writer.frames} frame(s) tracked before it (frames 0 "
                   f"to {writer.frames - 1}); tracks.json ends with where the run stopped")
            return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_STOPPED_PARTWAY
    print(f"grounded-sam: {writer.frames} frame(s) tracked, written to {args.out}", file=sys.stderr)
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' signature
    print(f"grounded-sam: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bound_kernel_caches()  # before any model runs: a labelling run sees many image sizes
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one readable line, not a source location
        try:
            if args.command == "label":
                return run_label(args, _find_models)
            if args.command == "merge":
                return run_merge(args)
            if args.command == "eval":
                return run_eval(args)
            if args.command == "track":
                return run_track(args)
            return run_segment(args)
        except GroundedSamError as err:
            _error(str(err))
            return EXIT_NOTHING_RAN
        except KeyboardInterrupt:
            done = {
                "label": "results.jsonl keeps every image labelled so far: run the same command to resume",
                "track": "tracks.json and tracks.mot.txt hold the frames tracked before it",
            }.get(args.command, "detections.json lists the images written so far")
            _error(f"stopped; {done}")
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
