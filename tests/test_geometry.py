"""Affines <-> (z, y, x) LPS spaces, align_to (flips and permutations, no interpolation),
from_array, volumes and the hints for spaces given the wrong way."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

from medmask import InvalidTypeError, InvalidValueError, SegmentationMask, SpaceMismatchError
from medmask.geometry import (
    affine_from_space,
    alignment,
    orientation_letters,
    space_from_affine,
    voxel_to_world,
)
from medmask.values import STATS_COLUMNS, label_stats
from rotations import rotation


def _oblique_space(shape: tuple[int, int, int] = (5, 6, 7)) -> Space:
    rot = rotation(0.4, -0.3, 0.9)
    return Space(
        shape=shape,
        origin=(-120.25, 33.5, 812.0),
        spacing=(2.5, 0.8, 0.7),
        x_orientation=tuple(float(v) for v in rot[:, 0]),
        y_orientation=tuple(float(v) for v in rot[:, 1]),
        z_orientation=tuple(float(v) for v in rot[:, 2]),
    )


def _relaid(space: Space, axes: tuple[int, ...], flips: tuple[bool, ...]) -> Space:
    """The space of ``np.flip(a.transpose(axes), flipped axes)`` for ``a`` on ``space``."""
    dirs = [
        np.asarray(d, float)
        for d in (space.x_orientation, space.y_orientation, space.z_orientation)
    ]
    shape = [int(space.shape[a]) for a in axes]
    start = [0, 0, 0]
    for t, a in enumerate(axes):
        if flips[t]:
            start[a] = int(space.shape[a]) - 1
    origin = voxel_to_world(space, np.array(start))
    new_dirs = [(-1 if flips[t] else 1) * dirs[a] for t, a in enumerate(axes)]
    return Space(
        shape=tuple(shape),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(space.spacing[a]) for a in axes),
        x_orientation=tuple(float(v) for v in new_dirs[0]),
        y_orientation=tuple(float(v) for v in new_dirs[1]),
        z_orientation=tuple(float(v) for v in new_dirs[2]),
    )


@pytest.fixture
def mask() -> SegmentationMask:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)
    return SegmentationMask(data, {"a": 1, "b": 2, "c": 3}, _oblique_space())


# --- affines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["RAS", "LPS", "ras"])
def test_affine_round_trip(convention: Any) -> None:
    space = _oblique_space()
    affine = affine_from_space(space, convention)
    back = space_from_affine(affine, (7, 6, 5), convention)
    assert tuple(back.shape) == (5, 6, 7)
    for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
        np.testing.assert_allclose(getattr(back, key), getattr(space, key), atol=1e-12)
    xyz = np.array([[6, 0, 4], [1, 2, 3]])
    world = (affine @ np.c_[xyz, np.ones(2)].T).T[:, :3]
    if convention.upper() == "RAS":
        world[:, :2] *= -1
    np.testing.assert_allclose(world, voxel_to_world(space, xyz[:, ::-1]), atol=1e-9)


def test_bad_affines_and_conventions() -> None:
    with pytest.raises(InvalidValueError, match="4x4"):
        space_from_affine(np.eye(3), (2, 2, 2))
    with pytest.raises(InvalidValueError, match="zero-length"):
        space_from_affine(np.diag([1.0, 0.0, 1.0, 1.0]), (2, 2, 2))
    with pytest.raises(InvalidValueError, match="not independent"):
        space_from_affine([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], (2, 2, 2))
    with pytest.raises(InvalidValueError, match=r"'RAS' .* or 'LPS'"):
        space_from_affine(np.eye(4), (2, 2, 2), "RAI")  # type: ignore[arg-type]


# --- align_to ---------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", list(itertools.product([False, True], repeat=3)))
def test_align_to_every_permutation_and_flip(
    mask: SegmentationMask, axes: tuple[int, ...], flips: tuple[bool, ...]
) -> None:
    target = _relaid(mask.space, axes, flips)
    aligned = mask.align_to(target)
    expected = np.flip(mask.data.transpose(axes), [t for t in range(3) if flips[t]])
    np.testing.assert_array_equal(aligned.data, expected)
    assert aligned.space is target
    assert aligned.mapping == mask.mapping
    assert aligned.data.flags.c_contiguous
    # every voxel keeps its world position: check through the aligned grid
    rng = np.random.default_rng(1)
    idx = rng.integers(0, aligned.shape, size=(50, 3))
    world = voxel_to_world(target, idx)
    back = np.rint(
        np.linalg.solve(
            np.stack(
                [
                    np.asarray(d, float) * s
                    for d, s in zip(
                        (
                            mask.space.x_orientation,
                            mask.space.y_orientation,
                            mask.space.z_orientation,
                        ),
                        mask.space.spacing,
                        strict=True,
                    )
                ],
                axis=1,
            ),
            (world - np.asarray(mask.space.origin, float)).T,
        ).T
    ).astype(int)
    np.testing.assert_array_equal(aligned.data[tuple(idx.T)], mask.data[tuple(back.T)])
    assert mask.align_to(mask.space) == mask


def test_align_to_refuses_grids_that_do_not_coincide(mask: SegmentationMask) -> None:
    space = mask.space
    shifted = Space(
        shape=space.shape,
        origin=tuple(float(v) + 0.35 for v in space.origin),
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError, match=r"coincide within 0\.001 mm\. Got 0\.606"):
        mask.align_to(shifted)
    mask.align_to(shifted, tolerance_mm=1.0)  # a looser tolerance accepts it
    finer = Space(
        shape=(5, 6, 14),
        origin=space.origin,
        spacing=(2.5, 0.8, 0.35),
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError, match=r"shape \(5, 6, 7\).*Got \(5, 6, 14\)"):
        mask.align_to(finer)
    rot = rotation(0.0, 0.0, np.pi / 4)
    rotated = Space(
        shape=space.shape,
        origin=space.origin,
        spacing=space.spacing,
        x_orientation=tuple(float(v) for v in rot[:, 0]),
        y_orientation=tuple(float(v) for v in rot[:, 1]),
        z_orientation=tuple(float(v) for v in rot[:, 2]),
    )
    with pytest.raises(SpaceMismatchError, match="resampling is not alignment"):
        mask.align_to(rotated)
    with pytest.raises(InvalidTypeError, match="from_array"):
        mask.align_to(np.eye(4))  # type: ignore[arg-type]


def test_alignment_returns_axes_and_flips(mask: SegmentationMask) -> None:
    target = _relaid(mask.space, (2, 0, 1), (True, False, True))
    assert alignment(mask.space, target) == ((2, 0, 1), (True, False, True))


# --- from_array and the hints -----------------------------------------------------------------


def test_from_array_with_a_nibabel_style_affine() -> None:
    xyz = np.zeros((7, 6, 5), np.uint8)
    xyz[6, 1, 2] = 4
    affine = np.diag([-0.9, 0.8, 2.5, 1.0])
    affine[:3, 3] = [100.0, -50.0, 20.0]
    mask = SegmentationMask.from_array(xyz, {"x": 4}, affine=affine)
    assert mask.shape == (5, 6, 7)
    assert mask.data[2, 1, 6] == 4
    ras = affine @ np.array([6, 1, 2, 1.0])
    np.testing.assert_allclose(
        voxel_to_world(mask.space, [2, 1, 6]), [-ras[0], -ras[1], ras[2]], atol=1e-12
    )
    lps = SegmentationMask.from_array(xyz, {"x": 4}, affine=affine, convention="LPS")
    np.testing.assert_allclose(voxel_to_world(lps.space, [2, 1, 6]), ras[:3], atol=1e-12)
    with pytest.raises(InvalidValueError, match="convention"):
        SegmentationMask.from_array(xyz, {"x": 4}, affine=affine, convention="XYZ")  # type: ignore[arg-type]


def test_wrong_spaces_get_a_way_out() -> None:
    data = np.zeros((5, 6, 7), np.uint8)
    with pytest.raises(InvalidTypeError, match=r"4x4 affine: use SegmentationMask\.from_array"):
        SegmentationMask(data, {}, np.eye(4))  # type: ignore[arg-type]
    xyz_space = Space(shape=(7, 6, 5))
    with pytest.raises(InvalidValueError, match=r"\(x, y, z\) space .*reverse_axis_order\(\)"):
        SegmentationMask(data, {}, xyz_space)
    SegmentationMask(data, {}, xyz_space.reverse_axis_order())


# --- volumes ----------------------------------------------------------------------------------


def test_volumes_table(mask: SegmentationMask) -> None:
    data = np.zeros((5, 6, 7), np.uint8)
    data[1:3, 2:5, 0:4] = 2
    data[4, 5, 6] = 1
    m = SegmentationMask(data, {"bg": 0, "one": 1, "two": 2, "absent": 9}, mask.space)
    table = m.volumes()
    assert list(table.columns) == list(STATS_COLUMNS)
    assert list(table["structure"]) == ["one", "two", "absent"]
    stats = label_stats(data)
    two = table.set_index("structure").loc["two"]
    assert two["voxels"] == stats[2].count == 24
    assert two["volume_ml"] == pytest.approx(24 * 2.5 * 0.8 * 0.7 / 1000)
    assert (two["z0"], two["z1"], two["y0"], two["y1"], two["x0"], two["x1"]) == (1, 2, 2, 4, 0, 3)
    absent = table.set_index("structure").loc["absent"]
    assert absent["voxels"] == 0
    assert absent["volume_ml"] == 0
    assert absent[["z0", "z1", "y0", "y1", "x0", "x1"]].isna().all()


# --- orientation letters ----------------------------------------------------------------------


def test_orientation_letters_name_where_each_array_axis_runs() -> None:
    assert orientation_letters(Space(shape=(4, 5, 6))) == ("L", "P", "S")
    assert orientation_letters(space_from_affine(np.eye(4), (4, 5, 6))) == ("S", "A", "R")
    lps = space_from_affine(np.diag([-1.0, 1.0, -1.0, 1.0]), (4, 5, 6), "LPS")
    assert orientation_letters(lps) == ("I", "P", "R")


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("signs", list(itertools.product((-1.0, 1.0), repeat=3)))
def test_orientation_letters_agree_with_nibabel(
    permutation: tuple[int, ...], signs: tuple[float, ...]
) -> None:
    nib = pytest.importorskip("nibabel")
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, list(permutation)] * np.array(signs) @ rotation(0.1, -0.2, 0.15)
    affine[:3, 3] = (4.0, -7.0, 12.5)
    expected = tuple(reversed(nib.aff2axcodes(affine)))  # nibabel's (i, j, k) is our (x, y, z)
    assert orientation_letters(space_from_affine(affine, (4, 5, 6))) == expected


# --- mask.affine: nibabel's img.affine, and the same world position for every voxel ------------


def _nibabel_affines() -> list[np.ndarray]:
    rot = rotation(0.4, -0.3, 0.9)
    oblique = np.eye(4)
    oblique[:3, :3] = rot @ np.diag([0.7, 0.8, 2.5])
    oblique[:3, 3] = (-30.5, 12.25, 80.0)
    flipped = np.diag([-0.9, 1.1, -3.0, 1.0])  # x and z flipped
    flipped[:3, 3] = (40.0, -20.0, 15.0)
    permuted = np.zeros((4, 4))  # array axis 0 runs along world z, 2 along x
    permuted[0, 2], permuted[1, 1], permuted[2, 0], permuted[3, 3] = 1.5, -0.6, 0.75, 1.0
    permuted[:3, 3] = (5.0, 6.0, -7.0)
    return [oblique, flipped, permuted, np.eye(4)]


@pytest.mark.parametrize(
    "affine", _nibabel_affines(), ids=["oblique", "flipped", "permuted", "eye"]
)
def test_every_voxel_lands_where_nibabel_puts_it(tmp_path: Any, affine: np.ndarray) -> None:
    import nibabel as nib

    import medmask

    rng = np.random.default_rng(3)
    xyz = rng.integers(0, 5, (4, 5, 6)).astype(np.uint8)
    path = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(xyz, affine), path)
    img = nib.load(path)
    mask = medmask.load_mask(path, mapping={f"l{v}": v for v in range(1, 5)})

    np.testing.assert_allclose(mask.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(
        mask.affine_lps, np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine, atol=1e-5
    )
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in xyz.shape], indexing="ij"), -1).reshape(
        -1, 3
    )
    ras_nibabel = nib.affines.apply_affine(img.affine, ijk)
    ras_ours = nib.affines.apply_affine(mask.affine, ijk)
    lps_ours = voxel_to_world(mask.space, ijk[:, ::-1])  # data[k, j, i] in the (z, y, x) space
    np.testing.assert_allclose(ras_ours, ras_nibabel, atol=1e-4)
    np.testing.assert_allclose(lps_ours * [-1, -1, 1], ras_nibabel, atol=1e-4)
    k, j, i = ijk[:, 2], ijk[:, 1], ijk[:, 0]
    np.testing.assert_array_equal(mask.data[k, j, i], np.asanyarray(img.dataobj)[i, j, k])


def test_affine_is_a_fresh_array_each_time(mask: SegmentationMask) -> None:
    first = mask.affine
    first[0, 0] = 99.0
    assert mask.affine[0, 0] != 99.0
    np.testing.assert_array_equal(mask.affine, affine_from_space(mask.space, "RAS"))
    np.testing.assert_array_equal(mask.affine_lps, affine_from_space(mask.space, "LPS"))
