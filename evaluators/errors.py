"""The error a network or model file that cannot be used raises: one line meant for the user."""

from __future__ import annotations


class ModelError(ValueError):
    """A model that cannot be used (corrupt or unsupported file, shape or class-count mismatch,
    missing or mismatched checkpoint); the message names the file and what is expected."""
