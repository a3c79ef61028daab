"""What the command modules share: progress lines on stderr, and a file that cannot be written
(a read-only, archived study) as a one-line error."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from dse.study_file import StudyFileError


def log(message: str) -> None:
    """A progress line on stderr (stdout holds what a command reports)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def writing(where: Path, remedy: str):
    """A file that cannot be written (a read-only, archived study) as a one-line error."""
    try:
        yield
    except OSError as err:
        raise StudyFileError(f"{err.filename or where}: cannot write ({err.strerror}); "
                             f"{remedy}") from None
