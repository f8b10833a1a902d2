"""Soft, correct edges: a mask refined into an alpha matte, and cut-outs without the old background's colour."""

from .refine import MATTING_METHODS, Matte, RefineSettings, estimate_foreground, refine_alpha
from .vitmatte import VitMatte, load_vitmatte

__all__ = ["MATTING_METHODS", "Matte", "RefineSettings", "VitMatte", "estimate_foreground", "load_vitmatte", "refine_alpha"]
