"""What every figure of the package uses: matplotlib's pyplot on the file-only backend, imported
only when a figure is drawn (importing it is slow), and caption wrapping."""

from __future__ import annotations

import textwrap


def pyplot():
    """matplotlib's pyplot on the file-only backend (imported late: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters."""
    return "\n".join(textwrap.wrap(text, width))
