"""Inputs shared by several test modules."""

from __future__ import annotations

import torch

from grounded_sam import DetectionSettings

PROMPT = "person . tie"


def top_score(detector, frame) -> float:
    found = detector.detect(frame, PROMPT, DetectionSettings(0.0, 0.0, nms_iou=None, max_detections=1))
    return float(found.scores[0])


def batch_with_empty_middle(detector, bus, zidane):
    """Three same-size frames and a threshold under which only the middle one has no detection."""
    candidates = [bus[:640, :640], zidane[:640, 300:940], torch.full((640, 640, 3), 128, dtype=torch.uint8), bus[400:1040, 100:740]]
    scores = [top_score(detector, c) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: scores[i])
    empty, others = order[0], order[-2:]
    threshold = (scores[empty] + scores[order[1]]) / 2
    assert scores[order[1]] - scores[empty] > 1e-3, "no clear gap to place the threshold in"
    frames = torch.stack([candidates[others[0]], candidates[empty], candidates[others[1]]])
    return frames.float() / 255.0, threshold
