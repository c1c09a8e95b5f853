"""Where a warning should point: the user's line, however deep inside medmask it is issued."""

from __future__ import annotations

import os
import sys

__all__ = ["user_stacklevel"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Directories whose frames are never the user's: medmask itself, plus any a tool running the
#: code adds (the mutation tests add mutmut's, whose trampolines sit between medmask frames).
NOT_USER_CODE: list[str] = [_PACKAGE]


def user_stacklevel() -> int:
    """The ``stacklevel`` for a warning issued by this function's caller that points at the
    first frame outside medmask (decorators and internal helpers in between are skipped)."""
    frame, level = sys._getframe(1), 1
    skipped = tuple(NOT_USER_CODE)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level
