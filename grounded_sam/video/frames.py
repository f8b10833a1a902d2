"""A clip as a stream of uint8 ``[H, W, 3]`` frames, whatever it comes as, never all in memory.

An IMAGE batch or an array is read a frame at a time; a video file is decoded with PyAV a frame
at a time; a folder of images is read in name order; any other iterable is taken as it comes.
Every frame must have the first frame's size: a frame that differs is a clear error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..media.images import load_image_file, to_uint8_frames

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class Frames:
    """The frames of one clip, in order; ``count`` is known for batches, files and folders (None for a stream)."""

    def __init__(self, frames: Iterable, count: int | None, name: str, frame_names: list[str] | None = None) -> None:
        self._frames = frames
        self.count = count
        self.name = name
        self._frame_names = frame_names  # a folder's file names, for errors
        self.fps: float | None = None  # a video file's frame rate

    def __iter__(self) -> Iterator[torch.Tensor]:
        size = None
        for index, frame in enumerate(self._frames):
            frame = to_uint8_frames(frame)[0]
            if size is None:
                size = tuple(frame.shape[:2])
            elif tuple(frame.shape[:2]) != size:
                which = f"{self._frame_names[index]} in {self.name}" if self._frame_names else f"frame {index} of {self.name}"
                raise InputError(
                    f"{which} is {frame.shape[1]}x{frame.shape[0]}, but the clip's first frame is "
                    f"{size[1]}x{size[0]}: every frame of a clip must have the same size (resize them first)"
                )
            yield frame
        if size is None:
            raise InputError(f"{self.name} has no frames: give at least one")


def open_frames(source: torch.Tensor | np.ndarray | str | Path | Iterable) -> Frames:
    """``source``'s frames: an IMAGE batch ``[B, H, W, C]``, a video file, a folder of images or an iterable."""
    if isinstance(source, Frames):
        return source
    if hasattr(source, "read") and hasattr(source, "seek"):  # a video file's bytes (ComfyUI's in-memory VIDEO)
        return open_video(source, "the video")
    if isinstance(source, (torch.Tensor, np.ndarray)):
        if source.ndim == 3:
            source = source[None]
        if source.ndim != 4 or source.shape[0] == 0:
            raise InputError(f"the clip is empty or not a batch of frames (shape {tuple(source.shape)}): give [B, H, W, C] with B >= 1")
        batch = source
        return Frames((batch[i] for i in range(batch.shape[0])), int(batch.shape[0]), "the batch")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _folder(path)
        if not path.is_file():
            raise InputError(f"clip not found: {path} (give a video file or a folder of frames)")
        return open_video(path, str(path))
    if isinstance(source, Iterable):
        return Frames(source, len(source) if hasattr(source, "__len__") else None, "the frames")
    raise InputError(f"cannot read frames from a {type(source).__name__}: give an IMAGE batch, a video file or a folder of images")


def _folder(path: Path) -> Frames:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}): give a folder of frames or a video file")

    def read() -> Iterator[torch.Tensor]:
        for file in files:
            yield load_image_file(file)[0]

    return Frames(read(), len(files), str(path), [f.name for f in files])


def open_video(file, name: str, window: tuple[float, float] = (0.0, 0.0), count: int | None = None) -> Frames:
    """A video (a path or a file object) decoded a frame at a time with PyAV; ``window`` (start, duration) in
    seconds keeps only the frames shown in it (duration 0: to the end)."""
    import av

    path = name
    if hasattr(file, "seek"):  # a file object may have been read already (a frame count, a header): from its start
        file.seek(0)
    try:
        container = av.open(str(file) if isinstance(file, Path) else file)
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise InputError(f"{path} is not a video this can decode ({err}): give an .mp4/.mkv/.webm/.mov file or a folder of frames") from err
    start, duration = window
    trimmed = start > 0 or duration > 0
    count = count if count is not None else (None if trimmed else int(stream.frames) or None)

    def decode() -> Iterator[torch.Tensor]:
        try:
            for frame in container.decode(stream):
                if trimmed and frame.time is not None:
                    if frame.time < start - 1e-6:
                        continue
                    if duration > 0 and frame.time >= start + duration - 1e-6:
                        break
                yield torch.from_numpy(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as err:
            raise InputError(f"{path} could not be decoded past this point ({err}): the file may be cut short") from err
        finally:
            container.close()

    frames = Frames(decode(), count, name)
    frames.fps = float(stream.average_rate) if stream.average_rate else None
    return frames
