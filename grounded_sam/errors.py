"""Errors we raise on purpose: each message says what went wrong and what to do about it."""

from __future__ import annotations


class GroundedSamError(Exception):
    """Base class, so hosts (ComfyUI, the CLI) can tell our explained failures from bugs."""


class InputError(GroundedSamError, ValueError):
    """The caller passed an image, prompt or setting we cannot use."""


class ModelFileError(GroundedSamError):
    """A model file exists but is not something we can load safely."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """A model file is not on disk (and could not or may not be downloaded)."""


class CancelledError(GroundedSamError):
    """The caller's ``RunHooks.check_cancel`` returned True: the run stopped between two layers, box chunks or
    frames. Nothing half-computed is cached, and no partial result is returned."""
