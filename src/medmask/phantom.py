"""Deterministic synthetic torso phantom (numpy only) for ``medmask demo``.

A thoraco-abdominal CT-like grid with about twenty TotalSegmentator-style organs in one
``uint8`` labelmap (lung lobes, liver, spleen, kidneys, vertebrae, vessels...) plus structures
that overlap them (whole lungs, a lung lesion straddling a fissure, a liver tumor). Organs are
ellipsoids and tubes with smooth low-frequency surface bumps. Everything depends only on the
shape, the spacing and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from medmask.errors import InvalidValueError, LabelNotFoundError

__all__ = ["PHANTOM_SHAPE", "PHANTOM_SPACING", "Phantom", "torso_phantom"]

PHANTOM_SHAPE: tuple[int, int, int] = (300, 512, 512)
"""Default array shape (z, y, x)."""
PHANTOM_SPACING: tuple[float, float, float] = (0.8, 0.7, 0.7)
"""Default voxel spacing in mm (z, y, x)."""

# All geometry is written in millimetres of this reference field of view (the default one):
# z from the inferior edge, y from the anterior edge, x from the patient's right edge. A grid of
# any shape samples the same picture, so organ positions scale with the shape.
_FOV = (240.0, 358.4, 358.4)
_MID = _FOV[2] / 2  # body midline (x)

_F32 = npt.NDArray[np.float32]
_Bool = npt.NDArray[np.bool_]
_Vec = tuple[float, float, float]

# Label values, TotalSegmentator order.
_LABELS = (
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
    "vertebrae_L3",
    "vertebrae_L2",
    "vertebrae_L1",
    "vertebrae_T12",
    "vertebrae_T11",
    "vertebrae_T10",
    "heart",
    "aorta",
    "inferior_vena_cava",
)
_LEFT_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left")
_RIGHT_LOBES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic torso.

    Attributes
    ----------
    space : Space
        Geometry in (z, y, x) order: axis 0 runs to patient superior (LPS +z), axis 1 to
        posterior (+y), axis 2 to patient left (+x).
    labelmap : numpy.ndarray
        ``uint8`` (z, y, x) array of mutually exclusive organs, 0 is background.
    labels : dict of str to int
        Organ name to its value in ``labelmap``, in value order (values 1..N).
    overlapping : dict of str to numpy.ndarray
        Structures overlapping the labelmap organs, as full-size bool arrays: ``lung_left``,
        ``lung_right`` (unions of their lobes), ``lesion`` (straddles the left oblique fissure)
        and ``liver_tumor``.
    """

    space: Space
    labelmap: npt.NDArray[np.uint8]
    labels: dict[str, int]
    overlapping: dict[str, npt.NDArray[np.bool_]]

    def structure(self, name: str) -> npt.NDArray[np.bool_]:
        """Binary mask of a structure.

        Parameters
        ----------
        name : str
            A labelmap organ or an overlapping structure.

        Returns
        -------
        numpy.ndarray
            A new (z, y, x) bool array.

        Raises
        ------
        LabelNotFoundError
            If there is no structure of that name.
        """
        if name in self.labels:
            return np.asarray(self.labelmap == self.labels[name])
        if name in self.overlapping:
            return self.overlapping[name].copy()
        raise LabelNotFoundError(
            f"No structure named {name!r} in the phantom; known: {', '.join(self.names())}."
        )

    def names(self) -> list[str]:
        """Names of all structures: labelmap organs (value order), then overlapping ones."""
        return [*self.labels, *self.overlapping]


# --- sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Region:
    """A box of the grid: its slices and its voxel-centre coordinates (reference mm), as
    broadcastable float32 vectors."""

    slices: tuple[slice, slice, slice]
    z: _F32
    y: _F32
    x: _F32

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])

    def within(self, outer: _Region) -> tuple[slice, slice, slice]:
        """This region's slices relative to ``outer`` (which must contain it)."""
        a, b, c = (
            slice(s.start - o.start, s.stop - o.start)
            for s, o in zip(self.slices, outer.slices, strict=True)
        )
        return (a, b, c)


class _Grid:
    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.step = tuple(f / n for f, n in zip(_FOV, shape, strict=True))

    def _at(self, slices: Sequence[slice]) -> _Region:
        coords: list[_F32] = []
        for axis, sl in enumerate(slices):
            c = (np.arange(sl.start, sl.stop, dtype=np.float64) + 0.5) * self.step[axis]
            coords.append(c.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)]))
        return _Region((slices[0], slices[1], slices[2]), coords[0], coords[1], coords[2])

    def cover(self, a: _Region, b: _Region) -> _Region:
        """The smallest region containing ``a`` and ``b``."""
        return self._at(
            [
                slice(min(p.start, q.start), max(p.stop, q.stop))
                for p, q in zip(a.slices, b.slices, strict=True)
            ]
        )

    def region(self, lo: Sequence[float], hi: Sequence[float]) -> _Region | None:
        """The voxels whose centres lie in [lo, hi] (reference mm), or None if there are none."""
        slices: list[slice] = []
        for axis in range(3):
            n, step = self.shape[axis], self.step[axis]
            start = max(0, math.ceil(lo[axis] / step - 0.5))
            stop = min(n, math.floor(hi[axis] / step - 0.5) + 1)
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        return self._at(slices)


def _jitter(
    rng: np.random.Generator, center: Sequence[float], radii: Sequence[float], shift: float = 2.5
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    c = np.asarray(center, float) + rng.uniform(-shift, shift, 3)
    r = np.asarray(radii, float) * rng.uniform(0.95, 1.05, 3)
    return c, r


def _bumps(
    reg: _Region, center: Sequence[float], scale: float, amplitude: float, rng: np.random.Generator
) -> _F32:
    """Smooth surface perturbation: a sum of three separable low-frequency cosine products,
    ``|result| <= amplitude``; its wavelengths are a few ``scale``s."""
    eps = np.zeros(reg.shape, np.float32)
    for _ in range(3):
        freq = rng.uniform(1.0, 3.0, 3) / scale
        phase = rng.uniform(0.0, 2 * math.pi, 3)
        weight = amplitude / 3 * float(rng.uniform(0.5, 1.0))
        cz, cy, cx = (
            np.cos(float(f) * (g - float(c)) + float(p))
            for f, g, c, p in zip(freq, (reg.z, reg.y, reg.x), center, phase, strict=True)
        )
        eps += (weight * cz * cy) * cx
    return eps


def _rotation(angles: _Vec) -> npt.NDArray[np.float64]:
    """Rotation of (z, y, x) vectors by ``angles`` degrees about the z, y and x axes."""
    a, b, c = (math.radians(v) for v in angles)
    about_z = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    about_y = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
    about_x = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    rot: npt.NDArray[np.float64] = about_z @ about_y @ about_x
    return rot


def _ellipsoid(
    grid: _Grid,
    rng: np.random.Generator,
    center: npt.NDArray[np.float64],
    radii: npt.NDArray[np.float64],
    *,
    angles: _Vec = (0.0, 0.0, 0.0),
    bumps: float = 0.3,
) -> tuple[_Region, _Bool] | None:
    """A (rotated) ellipsoid with a bumpy surface, evaluated in its bounding box only."""
    rot = _rotation(angles)
    quad = rot.T @ np.diag(1.0 / radii**2) @ rot
    half = np.sqrt((rot**2 * (radii**2)[:, None]).sum(axis=0)) * (1 + bumps)
    eps_rng = np.random.default_rng(rng.integers(2**63))
    reg = grid.region(center - half, center + half)
    if reg is None:
        return None
    dz, dy, dx = (g - float(c) for g, c in zip((reg.z, reg.y, reg.x), center, strict=True))
    q = [[float(v) for v in row] for row in quad]
    form = (q[0][0] * dz * dz + 2 * q[0][1] * dz * dy + q[1][1] * dy * dy) + (
        q[2][2] * dx * dx + 2 * q[0][2] * dz * dx
    )
    form = form + 2 * q[1][2] * dy * dx
    eps = _bumps(reg, list(center), float(np.mean(radii)), bumps, eps_rng)
    eps += 1
    eps *= eps
    return reg, np.asarray(form <= eps)


def _organ(
    grid: _Grid,
    rng: np.random.Generator,
    center: _Vec,
    radii: _Vec,
    angles: _Vec = (0.0, 0.0, 0.0),
    *,
    bumps: float = 0.3,
) -> tuple[_Region, _Bool] | None:
    """A jittered bumpy ellipsoid."""
    c, r = _jitter(rng, center, radii)
    return _ellipsoid(grid, rng, c, r, angles=angles, bumps=bumps)


def _liver(grid: _Grid, rng: np.random.Generator) -> tuple[_Region, _Bool] | None:
    """A large right lobe and a flatter left lobe reaching across the midline."""
    right = _organ(grid, rng, (132.0, 160.0, _MID - 70), (58.0, 78.0, 68.0), (0, 0, -10))
    left = _organ(grid, rng, (170.0, 122.0, _MID + 2), (24.0, 50.0, 62.0), (-10, 12, 0))
    if right is None or left is None:
        return right or left
    (r_reg, r_mask), (l_reg, l_mask) = right, left
    reg = grid.cover(r_reg, l_reg)
    mask = np.zeros(reg.shape, bool)
    mask[r_reg.within(reg)] |= r_mask
    mask[l_reg.within(reg)] |= l_mask
    return reg, mask


def _tube(
    grid: _Grid,
    rng: np.random.Generator,
    nodes: Sequence[_Vec],
    radii: Sequence[float],
    *,
    bumps: float = 0.15,
    shift: float = 2.0,
) -> tuple[_Region, _Bool] | None:
    """A bumpy tube along a polyline (a chain of capsules, radius linear along each one)."""
    p = np.asarray(nodes, float) + rng.uniform(-shift, shift, (len(nodes), 3))
    r = np.asarray(radii, float) * rng.uniform(0.95, 1.05, len(radii))
    eps_rng = np.random.default_rng(rng.integers(2**63))
    reach = float(r.max()) * (1 + bumps)
    reg = grid.region(p.min(axis=0) - reach, p.max(axis=0) + reach)
    if reg is None:
        return None
    scale = 1 + _bumps(reg, list(p.mean(axis=0)), float(r.mean()), bumps, eps_rng)
    mask = np.zeros(reg.shape, bool)
    for k in range(len(p) - 1):
        a, b, ra, rb = p[k], p[k + 1], float(r[k]), float(r[k + 1])
        grow = max(ra, rb) * (1 + bumps)
        sub = grid.region(np.minimum(a, b) - grow, np.maximum(a, b) + grow)
        if sub is None:
            continue
        ab = b - a
        length2 = float(ab @ ab)
        dz, dy, dx = (g - float(c) for g, c in zip((sub.z, sub.y, sub.x), a, strict=True))
        dot = (float(ab[0]) * dz + float(ab[1]) * dy) + float(ab[2]) * dx
        dist2 = (dz * dz + dy * dy) + dx * dx
        t = np.clip(dot / length2, 0.0, 1.0)
        dist2 -= t * (2 * dot - t * length2)
        radius = (ra + (rb - ra) * t) * scale[sub.within(reg)]
        mask[sub.within(reg)] |= dist2 <= radius * radius
    return reg, mask


def _vertebra(
    grid: _Grid, rng: np.random.Generator, zc: float, size: float
) -> tuple[_Region, _Bool] | None:
    """Body (a waisted cylinder with rounded end plates), neural arch, spinous and transverse
    processes of a vertebra centred at height ``zc``."""
    reg = grid.region((zc - 14, 205.0, _MID - 45 * size), (zc + 14, 305.0, _MID + 45 * size))
    by = 228.0 + float(rng.uniform(-1.5, 1.5))
    bx = _MID + float(rng.uniform(-1.0, 1.0))
    zc = zc + float(rng.uniform(-1.0, 1.0))
    if reg is None:
        return None
    h, ry, rx = 11.5, 16.0 * size, 21.0 * size
    zn = (reg.z - zc) / h
    dx = reg.x - bx
    eps = _bumps(reg, (zc, by, bx), 15.0, 0.06, rng)
    rho = ((reg.y - by) / ry) ** 2 + (dx / rx) ** 2
    body = (zn**4 + rho / (0.88 + 0.12 * zn**2)) <= 1 + eps
    cy, rc = by + ry + 8.0 * size, 8.0 * size
    ring = (reg.y - cy) ** 2 + dx**2
    arch = (ring > rc**2) & (ring <= (rc + 6.0 * size) ** 2) & (reg.y >= cy - 4) & (abs(zn) <= 0.7)
    spinous = (
        ((reg.z - zc + 3) / 7.0) ** 2
        + ((reg.y - cy - rc - 16 * size) / (18 * size)) ** 2
        + (dx / 4.5) ** 2
    ) <= 1 + eps
    transverse = (
        ((reg.z - zc) / 6.0) ** 2 + ((reg.y - cy + 2) / 6.0) ** 2 + (dx / (38.0 * size)) ** 2
    ) <= 1 + eps
    return reg, np.asarray(body | arch | spinous | transverse)


# --- the phantom ------------------------------------------------------------------------------


def _space(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Space:
    """Axial, head-first-supine-like: axis 0 to superior, 1 to posterior, 2 to patient left;
    the field of view is centred on x = y = 0 and z = -150 mm."""
    sz, sy, sx = spacing
    nz, ny, nx = shape
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -150.0 - (nz - 1) * sz / 2)
    return Space(
        shape=shape,
        origin=origin,
        spacing=spacing,
        x_orientation=(0.0, 0.0, 1.0),
        y_orientation=(0.0, 1.0, 0.0),
        z_orientation=(1.0, 0.0, 0.0),
    )


class _Painter:
    """Writes organs into the labelmap; a voxel keeps the first organ painted there."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.labelmap = np.zeros(shape, np.uint8)
        self.value = {name: i + 1 for i, name in enumerate(_LABELS)}

    def paint(self, name: str, found: tuple[_Region, _Bool] | None) -> None:
        if found is None:
            return
        reg, mask = found
        sub = self.labelmap[reg.slices]
        sub[mask & (sub == 0)] = self.value[name]

    def union(self, reg: _Region, names: Sequence[str]) -> _Bool:
        """Where ``reg`` holds any of the named organs."""
        return np.isin(self.labelmap[reg.slices], [self.value[n] for n in names])

    def full(self, found: tuple[_Region, _Bool] | None) -> _Bool:
        """A full-size bool array from a region's mask."""
        out = np.zeros(self.shape, bool)
        if found is not None:
            out[found[0].slices] = found[1]
        return out


@dataclass(frozen=True, eq=False)
class _Lung:
    """A lung ellipsoid and its fissures, in coordinates normalised by its centre and radii."""

    center: npt.NDArray[np.float64]
    radii: npt.NDArray[np.float64]
    left: bool
    oblique: tuple[float, float, float]  # zn = a + b*yn + 0.08*yn² + c*lateral, lower lobe below
    horizontal: float  # right lung: zn = h + 0.1 * yn, middle lobe below (and above oblique)
    seed: int  # of its surface bumps

    def fissure_z(self, yn: npt.ArrayLike, xn: npt.ArrayLike) -> npt.NDArray[np.float32]:
        a, b, c = self.oblique
        lateral = np.asarray(xn) if self.left else -np.asarray(xn)
        yn = np.asarray(yn)
        return np.asarray(a + b * yn + 0.08 * yn * yn + c * lateral, np.float32)

    def paint(self, grid: _Grid, painter: _Painter) -> _Region | None:
        """Paint the lobes; return the lung's region."""
        rng = np.random.default_rng(self.seed)
        found = _ellipsoid(grid, rng, self.center, self.radii, bumps=0.16)
        if found is None:
            return None
        reg, lung = found
        zn, yn, xn = (
            (g - float(c)) / float(r)
            for g, c, r in zip((reg.z, reg.y, reg.x), self.center, self.radii, strict=True)
        )
        lower = zn < self.fissure_z(yn, xn)
        if self.left:
            painter.paint("lung_lower_lobe_left", (reg, lung & lower))
            painter.paint("lung_upper_lobe_left", (reg, lung & ~lower))
        else:
            middle = ~lower & (zn < self.horizontal + 0.1 * yn)
            painter.paint("lung_lower_lobe_right", (reg, lung & lower))
            painter.paint("lung_middle_lobe_right", (reg, lung & middle))
            painter.paint("lung_upper_lobe_right", (reg, lung & ~lower & ~middle))
        return reg


def _make_lung(rng: np.random.Generator, left: bool) -> _Lung:
    if left:
        center, radii = _jitter(rng, (198.0, 172.0, _MID + 80.0), (72.0, 96.0, 64.0))
    else:
        center, radii = _jitter(rng, (202.0, 172.0, _MID - 78.0), (76.0, 98.0, 72.0))
    a, b = -0.05 + float(rng.uniform(-0.05, 0.05)), 0.75 + float(rng.uniform(-0.05, 0.05))
    h = -0.05 + float(rng.uniform(-0.03, 0.03))
    return _Lung(center, radii, left, (a, b, -0.1), h, int(rng.integers(2**63)))


def _lesion(
    grid: _Grid, painter: _Painter, rng: np.random.Generator, lung: _Lung
) -> tuple[_Region, _Bool] | None:
    """An irregular ~12-15 mm nodule of three bumpy blobs, centred on the oblique fissure of
    ``lung`` and clipped to it."""
    yn, lateral = 0.1 + float(rng.uniform(-0.05, 0.05)), 0.45 + float(rng.uniform(-0.05, 0.05))
    xn = lateral if lung.left else -lateral
    zn = float(lung.fissure_z(yn, xn))
    center = lung.center + lung.radii * np.array([zn, yn, xn])
    reg = grid.region(center - 16.0, center + 16.0)
    blobs = [(center, rng.uniform(4.8, 6.2, 3))]
    blobs += [(center + rng.normal(0.0, 2.5, 3), rng.uniform(3.5, 5.0, 3)) for _ in range(2)]
    eps_rng = np.random.default_rng(rng.integers(2**63))
    if reg is None:
        return None
    mask = np.zeros(reg.shape, bool)
    for c, r in blobs:
        form = sum(
            ((g - float(ci)) / float(ri)) ** 2
            for g, ci, ri in zip((reg.z, reg.y, reg.x), c, r, strict=True)
        )
        eps = 1 + _bumps(reg, list(c), 4.0, 0.3, eps_rng)
        mask |= np.asarray(form <= eps * eps)
    names = _LEFT_LOBES if lung.left else _RIGHT_LOBES
    return reg, mask & painter.union(reg, names)


def _validate(shape: object, spacing: object, seed: object) -> None:
    if not (
        isinstance(shape, tuple | list)
        and len(shape) == 3
        and all(isinstance(n, int | np.integer) and n >= 1 for n in shape)
    ):
        raise InvalidValueError(f"shape must be three positive ints (z, y, x), got {shape!r}.")
    if not (
        isinstance(spacing, tuple | list)
        and len(spacing) == 3
        and all(isinstance(s, int | float | np.number) and 0 < s < math.inf for s in spacing)
    ):
        raise InvalidValueError(f"spacing must be three positive numbers (mm), got {spacing!r}.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidValueError(f"seed must be a non-negative int, got {seed!r}.")


def torso_phantom(
    shape: tuple[int, int, int] = PHANTOM_SHAPE,
    spacing: tuple[float, float, float] = PHANTOM_SPACING,
    *,
    seed: int = 0,
) -> Phantom:
    """Build a synthetic torso.

    The picture (a 240 x 358 x 358 mm thoraco-abdominal field of view at the default shape) is
    the same for every ``shape``: organ positions scale with it, so a small shape gives a
    low-resolution version. ``spacing`` only sets the geometry, so physical sizes are life-like
    when ``shape * spacing`` is the default field of view. Tiny organs may vanish from very
    coarse grids.

    Parameters
    ----------
    shape : tuple of int
        Array shape (z, y, x).
    spacing : tuple of float
        Voxel spacing in mm (z, y, x).
    seed : int
        Non-negative; jitters organ positions, sizes and surfaces slightly.

    Returns
    -------
    Phantom
        Byte-identical for identical arguments.

    Raises
    ------
    InvalidValueError
        For a malformed shape, spacing or seed.
    """
    _validate(shape, spacing, seed)
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    grid, painter = _Grid(shape), _Painter(shape)

    def rng(organ: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), organ])

    # Painting order is priority: bones and vessels first, the lungs last.
    vertebrae = ("L3", "L2", "L1", "T12", "T11", "T10")
    for i, name in enumerate(vertebrae):
        painter.paint(f"vertebrae_{name}", _vertebra(grid, rng(i), 28.0 + 30.0 * i, 1.1 - 0.04 * i))
    m = _MID
    aorta = [(14.0, 196.0, m + 10), (60.0, 194.0, m + 14), (110.0, 196.0, m + 16)]
    aorta += [(160.0, 200.0, m + 18), (200.0, 205.0, m + 20), (255.0, 208.0, m + 22)]
    painter.paint(
        "aorta", _tube(grid, rng(10), aorta, [8.5, 9.5, 10.5, 11.0, 12.0, 12.5], bumps=0.08)
    )
    cava = [(14.0, 198.0, m - 22), (70.0, 196.0, m - 26), (120.0, 190.0, m - 30)]
    cava += [(160.0, 180.0, m - 30), (190.0, 168.0, m - 25)]
    painter.paint("inferior_vena_cava", _tube(grid, rng(11), cava, [10.0, 11.0, 12.0, 12.0, 13.0]))
    for name, organ, x, z, tilt in (
        ("kidney_right", 12, m - 68, 78.0, -15.0),
        ("kidney_left", 13, m + 68, 90.0, 15.0),
    ):
        kidney = _organ(grid, rng(organ), (z, 227.0, x), (52.0, 28.0, 24.0), (0.0, tilt, 0.0))
        painter.paint(name, kidney)
    gallbladder = _organ(grid, rng(14), (108.0, 112.0, m - 48), (32.0, 14.0, 14.0), (0, 0, -30))
    painter.paint("gallbladder", gallbladder)
    pancreas = [(98.0, 150.0, m - 28), (105.0, 150.0, m - 5), (112.0, 160.0, m + 30)]
    pancreas += [(122.0, 185.0, m + 75), (128.0, 200.0, m + 98)]
    painter.paint("pancreas", _tube(grid, rng(15), pancreas, [17.0, 12.0, 12.0, 11.0, 9.0]))
    heart = _organ(grid, rng(18), (188.0, 138.0, m + 18), (42.0, 52.0, 62.0), (-25, -25, 0))
    painter.paint("heart", heart)
    stomach = [(158.0, 185.0, m + 70), (150.0, 150.0, m + 80), (125.0, 125.0, m + 65)]
    stomach += [(108.0, 105.0, m + 35), (105.0, 105.0, m + 5), (112.0, 118.0, m - 18)]
    painter.paint("stomach", _tube(grid, rng(16), stomach, [32.0, 34.0, 30.0, 24.0, 18.0, 13.0]))
    spleen = _organ(grid, rng(17), (135.0, 215.0, m + 105), (48.0, 42.0, 22.0), (0, 0, -30))
    painter.paint("spleen", spleen)
    painter.paint("liver", _liver(grid, rng(19)))
    lungs = {"right": _make_lung(rng(20), left=False), "left": _make_lung(rng(21), left=True)}
    regions = {side: lung.paint(grid, painter) for side, lung in lungs.items()}
    overlapping: dict[str, _Bool] = {}
    for side, names in (("left", _LEFT_LOBES), ("right", _RIGHT_LOBES)):
        reg = regions[side]
        found = None if reg is None else (reg, painter.union(reg, names))
        overlapping[f"lung_{side}"] = painter.full(found)
    overlapping["lesion"] = painter.full(_lesion(grid, painter, rng(30), lungs["left"]))
    tumor = _organ(grid, rng(31), (150.0, 150.0, m - 85), (11.0, 13.0, 12.0), bumps=0.3)
    if tumor is not None:
        tumor = (tumor[0], tumor[1] & painter.union(tumor[0], ["liver"]))
    overlapping["liver_tumor"] = painter.full(tumor)

    labels = {name: painter.value[name] for name in _LABELS}
    return Phantom(_space(shape, spacing), painter.labelmap, labels, overlapping)
