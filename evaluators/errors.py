"""The errors a network, model file or layer assignment that cannot be used raises: one line
meant for the user (kept in a module that imports nothing, so the CLI names them cheaply)."""

from __future__ import annotations


class ModelError(ValueError):
    """A model that cannot be used (corrupt or unsupported file, shape or class-count mismatch,
    missing or mismatched checkpoint); the message names the file and what is expected."""


class AssignmentError(ValueError):
    """A layer-wise assignment or layer selection that does not fit the network; one line."""
