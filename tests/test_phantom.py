"""The synthetic torso phantom: determinism, labels, lobes, lesion, anatomy in LPS, volumes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from medmask.errors import InvalidValueError, LabelNotFoundError
from medmask.phantom import PHANTOM_SHAPE, PHANTOM_SPACING, Phantom, torso_phantom

SMALL = (40, 64, 64)
MEDIUM = (60, 96, 96)
# the default field of view (240 x 358.4 x 358.4 mm) on a coarse grid
COARSE, COARSE_SPACING = (75, 128, 128), (3.2, 2.8, 2.8)
LEFT_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left")
RIGHT_LOBES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")


@pytest.fixture(scope="module")
def small() -> Phantom:
    return torso_phantom(SMALL)


@pytest.fixture(scope="module")
def medium() -> Phantom:
    return torso_phantom(MEDIUM)


@pytest.fixture(scope="module")
def coarse() -> Phantom:
    return torso_phantom(COARSE, COARSE_SPACING)


def _lps_centroid(phantom: Phantom, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """LPS centroid by the formula of docs/format.md section 2."""
    i, j, k = np.argwhere(mask).mean(axis=0)
    space = phantom.space
    return np.asarray(
        np.asarray(space.origin, float)
        + i * space.spacing[0] * np.asarray(space.x_orientation, float)
        + j * space.spacing[1] * np.asarray(space.y_orientation, float)
        + k * space.spacing[2] * np.asarray(space.z_orientation, float)
    )


def _ml(phantom: Phantom, name: str) -> float:
    return float(phantom.structure(name).sum() * np.prod(phantom.space.spacing) / 1000)


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays(small: Phantom) -> None:
    again = torso_phantom(SMALL)
    assert again.labelmap.tobytes() == small.labelmap.tobytes()
    assert again.labels == small.labels
    assert list(again.overlapping) == list(small.overlapping)
    for name, mask in small.overlapping.items():
        assert again.overlapping[name].tobytes() == mask.tobytes()
    assert again.space == small.space


def test_different_seed_gives_different_arrays(small: Phantom) -> None:
    other = torso_phantom(SMALL, seed=1)
    assert not np.array_equal(other.labelmap, small.labelmap)
    assert not np.array_equal(other.overlapping["lesion"], small.overlapping["lesion"])
    assert other.labels == small.labels  # same structures, jittered
    assert other.space == small.space


# --- labels -------------------------------------------------------------------------------------


def test_labels_are_contiguous_present_and_unique(small: Phantom) -> None:
    assert small.labelmap.dtype == np.uint8
    assert small.labelmap.shape == SMALL
    values = list(small.labels.values())
    assert values == list(range(1, len(values) + 1))
    assert 15 <= len(values) <= 25
    counts = np.bincount(small.labelmap.ravel(), minlength=len(values) + 1)
    assert len(counts) == len(values) + 1  # no value beyond the labels
    assert {name for name, v in small.labels.items() if counts[v] == 0} == set()
    assert counts[0] > small.labelmap.size // 2  # background, no body outline
    names = small.names()
    assert len(names) == len(set(names))
    assert names == [*small.labels, *small.overlapping]
    assert set(small.overlapping) == {"lung_left", "lung_right", "lesion", "liver_tumor"}
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", *LEFT_LOBES):
        assert name in small.labels
    for mask in small.overlapping.values():
        assert mask.dtype == np.bool_
        assert mask.shape == SMALL


def test_structure_returns_masks(small: Phantom) -> None:
    liver = small.structure("liver")
    assert liver.dtype == np.bool_
    assert np.array_equal(liver, small.labelmap == small.labels["liver"])
    lesion = small.structure("lesion")
    assert np.array_equal(lesion, small.overlapping["lesion"])
    lesion[...] = True  # a copy: the phantom is unchanged
    assert not small.overlapping["lesion"].all()


def test_structure_unknown_name_raises(small: Phantom) -> None:
    with pytest.raises(LabelNotFoundError, match="lung_left") as info:
        small.structure("lung")
    assert isinstance(info.value, KeyError)
    assert "'lung'" in str(info.value)


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [
        ((0, 8, 8), (1.0, 1.0, 1.0), 0),
        ((8, 8), (1.0, 1.0, 1.0), 0),
        ((8, 8, 8), (1.0, -1.0, 1.0), 0),
        ((8, 8, 8), (1.0, 1.0, 1.0), -1),
    ],
)
def test_invalid_arguments_raise(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int
) -> None:
    with pytest.raises(InvalidValueError):
        torso_phantom(shape, spacing, seed=seed)


# --- lungs and lesion ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 5])
def test_lobes_tile_each_lung(seed: int) -> None:
    phantom = torso_phantom(MEDIUM, seed=seed)
    for side, lobes in (("left", LEFT_LOBES), ("right", RIGHT_LOBES)):
        union = np.zeros(MEDIUM, bool)
        for lobe in lobes:
            mask = phantom.structure(lobe)
            assert mask.any()
            assert not (union & mask).any()
            union |= mask
        assert np.array_equal(union, phantom.overlapping[f"lung_{side}"])
    assert not (phantom.overlapping["lung_left"] & phantom.overlapping["lung_right"]).any()


@pytest.mark.parametrize("seed", [0, 5])
def test_lesion_straddles_two_lobes(seed: int) -> None:
    phantom = torso_phantom(MEDIUM, seed=seed)
    lesion = phantom.overlapping["lesion"]
    assert lesion.any()
    assert not (lesion & ~phantom.overlapping["lung_left"]).any()  # inside the left lung
    under = set(np.unique(phantom.labelmap[lesion]).tolist())
    assert under == {phantom.labels[lobe] for lobe in LEFT_LOBES}


def test_liver_tumor_inside_liver(medium: Phantom) -> None:
    tumor = medium.overlapping["liver_tumor"]
    assert tumor.any()
    assert not (tumor & ~medium.structure("liver")).any()


# --- anatomy ------------------------------------------------------------------------------------


def test_space_is_axial_lps(medium: Phantom) -> None:
    space = medium.space
    assert tuple(space.shape) == MEDIUM
    np.testing.assert_allclose(space.spacing, PHANTOM_SPACING)
    np.testing.assert_allclose(space.x_orientation, (0, 0, 1))  # axis 0: superior
    np.testing.assert_allclose(space.y_orientation, (0, 1, 0))  # axis 1: posterior
    np.testing.assert_allclose(space.z_orientation, (1, 0, 0))  # axis 2: patient left


def test_anatomical_sides_in_lps(medium: Phantom) -> None:
    c = {name: _lps_centroid(medium, medium.structure(name)) for name in medium.names()}
    x, y, z = 0, 1, 2
    # patient right is smaller LPS x
    assert c["liver"][x] < 0 < c["spleen"][x]
    assert c["liver"][x] < c["spleen"][x]
    assert c["kidney_right"][x] < c["kidney_left"][x]
    assert c["liver"][x] < c["kidney_left"][x]
    assert c["lung_right"][x] < c["lung_left"][x]
    assert c["inferior_vena_cava"][x] < c["aorta"][x]
    # superior is larger LPS z
    assert c["heart"][z] > c["liver"][z]
    assert c["lung_left"][z] > c["kidney_left"][z]
    assert c["vertebrae_T10"][z] > c["vertebrae_L3"][z]
    # anterior is smaller LPS y
    vertebrae = np.isin(medium.labelmap, [v for n, v in medium.labels.items() if "vertebrae" in n])
    assert c["aorta"][y] < _lps_centroid(medium, vertebrae)[y]
    assert c["heart"][y] < c["aorta"][y]
    # lobes: upper lobes superior and anterior to lower lobes
    for upper, lower in (LEFT_LOBES, (RIGHT_LOBES[0], RIGHT_LOBES[2])):
        assert c[upper][z] > c[lower][z]
        assert c[upper][y] < c[lower][y]


def test_volumes_are_plausible(coarse: Phantom) -> None:
    expected_ml = {
        "liver": (800, 2500),
        "spleen": (100, 400),
        "kidney_left": (100, 250),
        "kidney_right": (100, 250),
        "heart": (300, 900),
        "lung_left": (800, 3000),
        "lung_right": (800, 3000),
        "aorta": (40, 200),
        "vertebrae_L1": (15, 60),
        "lesion": (0.3, 2.0),  # ~10-15 mm
        "liver_tumor": (2, 20),
    }
    for name, (low, high) in expected_ml.items():
        assert low < _ml(coarse, name) < high, name


def test_picture_scales_with_shape(coarse: Phantom) -> None:
    fine = torso_phantom((150, 256, 256), (1.6, 1.4, 1.4))
    for name in ("liver", "heart", "lung_upper_lobe_right", "kidney_left"):
        assert _ml(fine, name) == pytest.approx(_ml(coarse, name), rel=0.05)
        np.testing.assert_allclose(
            _lps_centroid(fine, fine.structure(name)),
            _lps_centroid(coarse, coarse.structure(name)),
            atol=2.0,  # mm; the grids are offset by the voxel-centre convention
        )


def test_surfaces_are_smooth(coarse: Phantom) -> None:
    # no salt-and-pepper: an organ's voxels mostly have all six neighbours in the organ
    liver = coarse.structure("liver")
    inner = liver[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(liver, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    assert inner.sum() > 0.75 * liver.sum()


def test_default_size() -> None:
    phantom = torso_phantom()
    assert phantom.labelmap.shape == PHANTOM_SHAPE
    assert tuple(phantom.space.shape) == PHANTOM_SHAPE
    counts = np.bincount(phantom.labelmap.ravel(), minlength=len(phantom.labels) + 1)
    assert (counts[1:] > 0).all()
    assert 800 < counts[phantom.labels["liver"]] * np.prod(PHANTOM_SPACING) / 1000 < 2500
    lesion = phantom.overlapping["lesion"]
    assert len(np.unique(phantom.labelmap[lesion])) == 2
