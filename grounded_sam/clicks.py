"""Point prompts: clicks on the object (positive) or off it (negative), and which object each one refines.

Clicks come as ComfyUI core's JSON (``[{"x": 120, "y": 80}, ...]`` in pixels, what KJNodes'
``PointsEditor`` writes and core ``SAM3_Detect`` reads) or as the CLI's ``"x,y;x,y"``. A click
belongs to the detected object whose box holds it (the smallest such box); positive clicks that
no box holds make one more object of their own, with the negative clicks that no box holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class Clicks:
    """Pixel ``(x, y)`` clicks on one frame size and which of them are on the object."""

    coords: torch.Tensor  # float32 [P, 2], pixel x, y
    positive: torch.Tensor  # bool [P]

    @classmethod
    def none(cls) -> Clicks:
        return cls(torch.zeros((0, 2)), torch.zeros(0, dtype=torch.bool))

    @classmethod
    def of(cls, positive: list[tuple[float, float]], negative: list[tuple[float, float]] = ()) -> Clicks:
        points = [*positive, *negative]
        coords = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
        return cls(coords, torch.arange(len(points)) < len(positive))

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def select(self, rows: torch.Tensor) -> Clicks:
        return Clicks(self.coords[rows], self.positive[rows])

    def labels(self) -> torch.Tensor:
        """SAM's point labels: 1 on the object, 0 off it."""
        return self.positive.long()

    def check_inside(self, image_size: tuple[int, int]) -> Clicks:
        """These clicks, or a clear error naming the first that lies outside a frame of ``image_size`` (H, W)."""
        h, w = image_size
        outside = (self.coords[:, 0] < 0) | (self.coords[:, 0] >= w) | (self.coords[:, 1] < 0) | (self.coords[:, 1] >= h)
        if outside.any():
            x, y = self.coords[int(outside.nonzero()[0])].tolist()
            raise InputError(f"the point ({x:g}, {y:g}) is outside the {w}x{h} image: points are pixels, x from 0 to {w - 1}, y from 0 to {h - 1}")
        return self


def points_from_json(text: str | None, name: str = "positive_coords") -> list[tuple[float, float]]:
    """ComfyUI core's point list, ``[{"x": 10, "y": 20}, ...]``; "" or None is no points."""
    if text is None or not str(text).strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f'{name} is not JSON ({err.msg}): give points as [{{"x": 120, "y": 80}}, ...] in pixels') from err
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, dict) and {"x", "y"} <= set(p) for p in value):
        raise InputError(f'{name} must be a list of points like [{{"x": 120, "y": 80}}], got {str(text)[:80]!r}')
    try:
        return [(float(p["x"]), float(p["y"])) for p in value]
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}: every x and y must be a number, got {str(text)[:80]!r}") from err


def points_from_text(text: str | None, name: str = "--points") -> list[tuple[float, float]]:
    """The CLI's ``"x,y;x,y"``; "" or None is no points."""
    if text is None or not text.strip():
        return []
    points = []
    for part in text.split(";"):
        pieces = [p.strip() for p in part.split(",")]
        try:
            if len(pieces) != 2:
                raise ValueError
            points.append((float(pieces[0]), float(pieces[1])))
        except ValueError:
            raise InputError(f'{name}: {part.strip()!r} is not a point: give pixels as "x,y;x,y", e.g. "120,80;300,210"') from None
    return points


def owners(clicks: Clicks, boxes: torch.Tensor) -> torch.Tensor:
    """int64 ``[P]``: for each click, the row of the smallest box (pixel xyxy ``[N, 4]``) that holds it; -1: none does."""
    if len(clicks) == 0 or boxes.shape[0] == 0:
        return torch.full((len(clicks),), -1, dtype=torch.int64)
    x, y = clicks.coords[:, :1], clicks.coords[:, 1:]
    inside = (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])  # [P, N]
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).expand_as(inside)
    smallest = torch.where(inside, areas, torch.full_like(areas, float("inf"))).argmin(dim=1)
    return torch.where(inside.any(dim=1), smallest, torch.full_like(smallest, -1))
