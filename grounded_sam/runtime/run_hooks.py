"""Progress and cancel points inside a frame, so a host's bar moves and its stop button works mid-frame.

One frame takes seconds to minutes on a CPU, so checking only between frames is not enough.
For the length of a stage, every repeated layer of the model running it (each element of a
``ModuleList``: Swin and ViT blocks, BERT layers, encoder and decoder layers) gets a forward
pre-hook that asks the host whether to stop and reports how far the frame has come; mask
decoding reports after each chunk of boxes. Nothing is hooked when the host watches nothing.

A model may serve several threads at once (one pipeline behind a threaded web server): a hook
acts only in the thread whose run installed it, so each run sees its own progress and its own
cancel, whatever else runs through the same layers.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..errors import CancelledError

# Progress is reported in hundredths of a frame: (done, total) with total = 100 x frames.
STEPS_PER_FRAME = 100
# Share of a frame given to detection before the number of boxes is known.
DETECTION_SHARE = 0.45
# SAM's image encoder costs about as much as decoding this many boxes (ViT-B: ~7.6 s vs ~0.07 s a box on 2 cores).
ENCODER_COST_IN_BOXES = 100


@dataclass(frozen=True)
class RunHooks:
    """How a host (ComfyUI, a CLI) watches and stops a run without us importing it."""

    on_progress: Callable[[int, int], None] | None = None  # (done, total) in hundredths of a frame
    # called between layers, box chunks and frames: returns True to stop the run with ``CancelledError``
    # (or raises the host's own exception, which goes through as it is: ComfyUI's interrupt)
    check_cancel: Callable[[], bool | None] | None = None
    on_stage: Callable[[str], None] | None = None  # what the frame is doing: "detecting", "encoding image", "masks 16/50"


def repeated_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Each distinct element of every ``ModuleList`` inside ``module``: the units a forward pass repeats."""
    seen: set[int] = set()
    layers = []
    for sub in module.modules():
        if isinstance(sub, torch.nn.ModuleList):
            for layer in sub:
                if id(layer) not in seen:
                    seen.add(id(layer))
                    layers.append(layer)
    return layers


class FrameSteps:
    """The progress of one frame through detection, SAM's encoder and mask decoding."""

    # Most hook calls seen in one pass of each model: the next pass's 100 %.
    _calls_per_pass: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
    _calls_lock = threading.Lock()

    def __init__(self, hooks: RunHooks, frame: int, frames: int) -> None:
        self.hooks = hooks
        self.frame = frame
        self.frames = frames
        self.watched = any(h is not None for h in (hooks.on_progress, hooks.check_cancel, hooks.on_stage))
        self._start = 0.0  # fraction of the frame done before the current stage
        self._share = DETECTION_SHARE  # fraction of the frame the current stage covers
        self._encoder_share = 0.0
        self._reported = -1

    def check(self) -> None:
        if self.hooks.check_cancel is not None and self.hooks.check_cancel():
            raise CancelledError(f"stopped by the caller in frame {self.frame + 1} of {self.frames}")

    def _report(self, fraction_of_frame: float) -> None:
        if self.hooks.on_progress is None:
            return
        value = self.frame * STEPS_PER_FRAME + int(min(1.0, fraction_of_frame) * STEPS_PER_FRAME)
        if value != self._reported:
            self._reported = value
            self.hooks.on_progress(value, self.frames * STEPS_PER_FRAME)

    def _say(self, stage: str) -> None:
        if self.hooks.on_stage is not None:
            self.hooks.on_stage(stage)

    def _advance(self, fraction_of_stage: float) -> None:
        self.check()
        self._report(self._start + self._share * min(1.0, fraction_of_stage))

    @contextlib.contextmanager
    def _stage(self, module: torch.nn.Module, share: float) -> Iterator[None]:
        self._share = share
        if not self.watched:
            yield
            return
        layers = repeated_layers(module)
        with self._calls_lock:
            expected = self._calls_per_pass.get(module, len(layers)) or 1
        calls = 0
        owner = threading.get_ident()

        def step(_module, _args) -> None:
            nonlocal calls
            if threading.get_ident() != owner:  # another run through the same model, in another thread
                return
            calls += 1
            self._advance(calls / expected)

        handles = [layer.register_forward_pre_hook(step) for layer in layers]
        try:
            self.check()
            yield
        finally:
            for handle in handles:
                handle.remove()
        # a pass that reused cached work fires fewer hooks (none at all on a full hit): keep the largest count
        if calls:
            with self._calls_lock:
                self._calls_per_pass[module] = max(calls, self._calls_per_pass.get(module, 0))
        self._start += share
        self._report(self._start)

    def detection(self, model: torch.nn.Module, whole_frame: bool = False) -> contextlib.AbstractContextManager[None]:
        """Detection's share of the frame; all of it when nothing is segmented after (``whole_frame``)."""
        self._say("detecting")
        return self._stage(model, 1.0 if whole_frame else DETECTION_SHARE)

    def plan_segmentation(self, boxes: int) -> None:
        """Split the rest of the frame between the encoder and decoding ``boxes`` boxes by their cost."""
        rest = 1.0 - self._start
        self._encoder_share = rest * ENCODER_COST_IN_BOXES / (ENCODER_COST_IN_BOXES + boxes)

    def plan_passes(self, passes: int) -> None:
        """The next encoder stage gets an equal share of what is left of the frame with ``passes - 1`` others
        (a clip's memory pass forwards, then each step of a backward pass): the bar only moves forward."""
        self._encoder_share = (1.0 - self._start) / max(1, passes)

    def encoder(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        self._say("encoding image")
        return self._stage(model, self._encoder_share)

    def chunk_decoded(self, done: int, total: int) -> None:
        """Called by mask decoding after each chunk of boxes."""
        self._say(f"masks {done}/{total}")
        self._share = 1.0 - self._start
        self._advance(done / max(1, total))

    def finish(self) -> None:
        self._report(1.0)
