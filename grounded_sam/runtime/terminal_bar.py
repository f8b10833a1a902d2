"""A terminal progress bar over a list of images that also moves inside each image.

One full-size image takes seconds to minutes on a CPU, so the bar counts fractions of an
image (from the pipeline's ``RunHooks``) and shows the current stage; tqdm adds the rate and
the time left over the whole list.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .run_hooks import STEPS_PER_FRAME, RunHooks


class ImagesBar:
    """``with ImagesBar(n) as bar: for i, ...: hooks = bar.image(i, name); ...; bar.done(i)``."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None, unit: str = "images") -> None:
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.bar = tqdm(
            total=total or None,
            unit=unit,
            disable=not enabled,
            file=self.stream,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} " + unit + " [{elapsed}<{remaining}, {rate_fmt}]{postfix}",
        )
        self._shown = ("", "")  # (image, stage) in the postfix now

    def __enter__(self) -> ImagesBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Take the bar off the terminal (before a closing message); closing again does nothing."""
        self.bar.close()

    def _move_to(self, position: float) -> None:
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def image(self, index: int, name: str) -> RunHooks:
        """Hooks for image ``index``: progress within it and its stage go to the bar."""

        def on_progress(done: int, total: int) -> None:
            self._move_to(index + done / max(1, total))

        def on_stage(stage: str) -> None:
            if (name, stage) != self._shown:  # redraw only when it changes
                self._shown = (name, stage)
                self.bar.set_postfix_str(f"{name}: {stage}", refresh=True)

        self._move_to(index)
        return RunHooks(on_progress=on_progress, on_stage=on_stage)

    def clip(self) -> RunHooks:
        """Hooks for a whole clip (``GroundedSam.track``): its progress counts in frames."""

        def on_progress(done: int, total: int) -> None:
            self._move_to(done / STEPS_PER_FRAME)

        def on_stage(stage: str) -> None:
            if ("", stage) != self._shown:
                self._shown = ("", stage)
                self.bar.set_postfix_str(stage, refresh=True)

        return RunHooks(on_progress=on_progress, on_stage=on_stage)

    def done(self, index: int) -> None:
        """Image ``index`` is finished, written or failed."""
        self._move_to(index + 1)

    def write(self, message: str, file: TextIO | None = None) -> None:
        """A line above the bar (stdout by default), the bar redrawn below it."""
        file = file or sys.stdout
        if self.bar.disable:
            print(message, file=file)
        else:
            self.bar.write(message, file=file)
