"""Grounding DINO: text prompt to boxes."""
