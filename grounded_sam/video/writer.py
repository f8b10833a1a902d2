"""What ``grounded-sam track`` writes, each file current after every frame, so a stopped run keeps its work.

- ``tracks.json``: a JSON list, one entry per frame, complete again after every frame; a run stopped
  partway ends it with ``{"stopped": {"frames_tracked": n, "next_frame": n, "reason": ...}}``;
- ``tracks.mot.txt``: MOT Challenge lines ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frames from 1), flushed per frame;
- ``--masks png``: ``masks/000000.png``, 16-bit, each pixel the id of the track there (0: none; on
  overlap the higher id wins); ``--masks video``: the same ids in a lossless FFV1 ``masks.mkv``
  (16-bit gray, ``gray16le``, as lossless as the PNGs: ids up to 65535; a track id past that stops the
  run with what to do rather than writing a wrong id);
- ``--preview``: ``preview.mp4``, the frames with each track's mask, box, id and label drawn, in
  its own colour on every frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..media.outputs import JsonListFile
from ..media.preview import draw_preview
from ..records import Detections

MASK_FORMATS = ("none", "png", "video")
MAX_MAP_ID = 65535  # the largest id a 16-bit id map (PNG or FFV1 gray16le) holds


def id_map(found: Detections) -> np.ndarray:
    """uint16 ``[H, W]``: each pixel the track id of the object there, 0 for none (higher ids on top)."""
    ids = np.zeros(found.image_size, dtype=np.uint16)
    if len(found) and int(found.track_id.max()) > MAX_MAP_ID:
        raise InputError(
            f"track id {int(found.track_id.max())} does not fit a 16-bit id map (at most {MAX_MAP_ID}): "
            "track the clip in shorter parts (ids count up from 1 in each run), or leave out --masks (tracks.json and the MOT file have no limit)"
        )
    order = found.track_id.argsort().tolist() if len(found) else []
    for k in order:
        ids[found.masks[k].numpy()] = int(found.track_id[k])
    return ids


class TrackWriter:
    def __init__(self, out: Path, masks: str = "none", preview: bool = False, fps: float = 25.0) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.masks = masks
        self.fps = fps
        self.frames = 0
        self._json = JsonListFile(out / "tracks.json")
        self._mot = open(out / "tracks.mot.txt", "w", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._preview = _VideoFile(out / "preview.mp4", fps, "libx264", "yuv420p", {"crf": "20"}) if preview else None
        self._mask_video = _VideoFile(out / "masks.mkv", fps, "ffv1", "gray16le", {}) if masks == "video" else None
        if masks == "png":
            (out / "masks").mkdir(exist_ok=True)

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, index: int, frame: torch.Tensor, found: Detections) -> dict:
        """Frame ``index`` (0-based) of the clip and its tracked objects (a one-frame record with ``track_id``)."""
        objects = []
        for row in found.to_json():
            row.pop("frame")
            objects.append({"track_id": row.pop("track_id"), **row})
        entry = {"frame": index, "objects": objects}
        for row in objects:
            x0, y0, x1, y1 = row["box_xyxy"]
            self._mot.write(f"{index + 1},{row['track_id']},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{row['score']:.4f},-1,-1,-1\n")
        self._mot.flush()
        if self.masks == "png":
            Image.fromarray(id_map(found)).save(self.out / "masks" / f"{index:06d}.png")
        if self._mask_video is not None:
            self._mask_video.add(id_map(found))
        if self._preview is not None:
            self._preview.add(draw_preview(frame, found).numpy())
        self._json.add(entry)
        self.frames += 1
        return entry

    def stopped(self, reason: str) -> dict:
        """The run stopped before the clip's end: ``tracks.json``'s last entry says after how many frames and why."""
        entry = {"stopped": {"frames_tracked": self.frames, "next_frame": self.frames, "reason": reason}}
        self._json.add(entry)
        return entry

    def close(self) -> None:
        self._json.close()
        self._mot.close()
        for video in (self._preview, self._mask_video):
            if video is not None:
                video.close()


class _VideoFile:
    """Frames appended to a video file with PyAV; opened at the first frame, when its size is known."""

    def __init__(self, path: Path, fps: float, codec: str, pixel_format: str, options: dict[str, str]) -> None:
        self.path, self.fps, self.codec, self.pixel_format, self.options = path, fps, codec, pixel_format, options
        self._container = None
        self._stream = None

    def add(self, picture: np.ndarray) -> None:
        from fractions import Fraction

        import av

        if self.pixel_format == "yuv420p" and (picture.shape[0] % 2 or picture.shape[1] % 2):  # 4:2:0 needs even sides
            picture = picture[: picture.shape[0] // 2 * 2, : picture.shape[1] // 2 * 2]
        if self._container is None:
            self._container = av.open(str(self.path), "w")
            self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.height, self._stream.width = picture.shape[:2]
            self._stream.pix_fmt = self.pixel_format
            self._stream.options = self.options
        source = ("gray16le" if picture.dtype == np.uint16 else "gray") if picture.ndim == 2 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=source)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
