"""Renamed keywords and functions keep working for one release, with a DeprecationWarning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from ._stack import user_stacklevel
from .errors import InvalidTypeError

__all__ = [
    "REMOVED_IN",
    "deprecated_alias",
    "renamed_attribute",
    "renamed_keywords",
    "warn_renamed",
]

#: The release that drops what is deprecated now.
REMOVED_IN: Final = "0.4"
_P = ParamSpec("_P")
_R = TypeVar("_R")


def renamed_keywords(**renames: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Accept each keyword's old name (``out="target"``: ``out=`` for ``target=``) with a
    :class:`DeprecationWarning` that points at the caller's line."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise InvalidTypeError(
                        f"{func.__name__}() got {old}= and {new}=; pass only {new}= "
                        f"({old}= is its old name)."
                    )
                warnings.warn(
                    f"{func.__name__}({old}=...) is deprecated: use {new}=... "
                    f"({old}= will be removed in medmask {REMOVED_IN}).",
                    DeprecationWarning,
                    stacklevel=user_stacklevel(),
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def deprecated_alias(func: Callable[_P, _R], old: str, advice: str) -> Callable[_P, _R]:
    """``func`` under its old name ``old``, warning with ``advice`` on every call."""

    @functools.wraps(func)
    def alias(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        warnings.warn(
            f"{old} is deprecated: {advice} ({old} will be removed in medmask {REMOVED_IN}).",
            DeprecationWarning,
            stacklevel=user_stacklevel(),
        )
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old.rsplit(".", 1)[-1]
    return alias


def renamed_attribute(owner: str, old: str, new: str) -> property:
    """A read-only property ``old`` that returns attribute ``new`` with a warning (for a
    class ``owner`` whose attribute was renamed)."""

    def get(self: object) -> object:
        warn_renamed(f"{owner}.{old}", f"{owner}.{new}")
        return getattr(self, new)

    return property(get, doc=f"Deprecated name of :attr:`{new}`.")


def warn_renamed(old: str, new: str) -> None:
    """Warn, at the user's line, that the name ``old`` is now ``new``."""
    warnings.warn(
        f"{old} is now {new}; the old name goes in medmask {REMOVED_IN}.",
        DeprecationWarning,
        stacklevel=user_stacklevel(),
    )
