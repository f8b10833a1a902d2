"""Segment Anything: boxes to masks."""
