"""``pack_folder`` in bounded memory: it holds one layer and the file being read, never every
structure at once, so its peak does not grow with the number of structures (issue 20)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spacetransformer import Space

from bounded import traced_peak
from medmask import MaskArchive
from medmask.interop.folders import pack_folder
from medmask.interop.nifti import read_nifti, write_nifti
from medmask.values import present_values

SHAPE = (40, 80, 80)
VOXELS = SHAPE[0] * SHAPE[1] * SHAPE[2]  # one full-size uint8 label array, in bytes


def _boxes(count: int, seed: int = 0) -> list[tuple[slice, slice, slice]]:
    """Boxes of random place: many overlap, so the structures fill several layers."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        z, y, x = (int(v) for v in rng.integers(0, (25, 55, 55)))
        boxes.append((slice(z, z + 15), slice(y, y + 25), slice(x, x + 25)))
    return boxes


def _folder(root: Path, count: int) -> tuple[Path, dict[str, np.ndarray]]:
    root.mkdir()
    arrays = {}
    for i, box in enumerate(_boxes(count)):
        array = np.zeros(SHAPE, np.uint8)
        array[box] = 1
        arrays[f"s{i:03d}"] = array
        write_nifti(array, Space(shape=SHAPE), root / f"s{i:03d}.nii.gz")
    return root, arrays


def _one_input_peak(path: Path) -> int:
    """Peak of reading one file and finding its values: what pack_folder does per file."""

    def read() -> None:
        array, _ = read_nifti(path)
        present_values(array)

    _, peak = traced_peak(read)
    assert isinstance(peak, int)
    return peak


@pytest.mark.parametrize("count", [20, 80])
def test_pack_folder_peak_is_one_input_plus_two_label_arrays(tmp_path: Path, count: int) -> None:
    folder, arrays = _folder(tmp_path / "case", count)
    target = tmp_path / "case.mska"
    report, peak = traced_peak(lambda: pack_folder(folder, target))
    assert not isinstance(report, BaseException), report
    assert isinstance(peak, int)
    assert report.n_layers >= 3  # overlapping structures: several layers, built one by one
    one_input = _one_input_peak(folder / "s000.nii.gz")
    assert peak <= one_input + 2.5 * VOXELS, (peak / VOXELS, one_input / VOXELS)
    with MaskArchive(target) as archive:  # and every voxel is there
        assert sorted(archive.structures()) == sorted(arrays)
        for name, array in arrays.items():
            assert np.array_equal(archive.load_structure(name), array != 0), name


def test_pack_folder_peak_does_not_grow_with_the_number_of_structures(tmp_path: Path) -> None:
    peaks = []
    for count in (10, 60):
        folder, _ = _folder(tmp_path / f"case{count}", count)
        _, peak = traced_peak(lambda f=folder, c=count: pack_folder(f, tmp_path / f"{c}.mska"))
        assert isinstance(peak, int)
        peaks.append(peak)
    # 50 more structures add their small compressed copies (and layers) only: holding them
    # as arrays would add 50 full-size arrays
    assert peaks[1] - peaks[0] < VOXELS, [p / VOXELS for p in peaks]
