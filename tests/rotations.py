"""Rotation matrices for oblique test geometries."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def rotation(a: float, b: float, c: float) -> npt.NDArray[np.float64]:
    """Rotation by ``a``, ``b``, ``c`` radians about x, then y, then z."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx
