"""save_mask / load_mask / read_info / MaskFile: exact round trips, statistics, ROI reads."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from spacetransformer import Space

import medmask
from medmask import LabelMapping, MaskFile, SegmentationMask, load_mask, read_info, save_mask
from medmask.format.container import HEADER_SIZE, INDEX_ENTRY_SIZE

DTYPES = {1: np.bool_, 8: np.uint8, 16: np.uint16, 32: np.uint32}


# --- helpers -----------------------------------------------------------------------------------


def rotated_space(shape: tuple[int, int, int], seed: int = 0) -> Space:
    """A space with a rotated orthonormal basis, odd spacing and a non-trivial origin."""
    rng = np.random.default_rng(seed)
    rot = Rotation.from_euler("zyx", rng.uniform(-180, 180, 3), degrees=True).as_matrix()
    return Space(
        shape=shape,
        origin=tuple(float(v) for v in rng.uniform(-500, 500, 3)),
        spacing=tuple(float(v) for v in rng.uniform(0.3, 5.0, 3)),
        x_orientation=tuple(float(v) for v in rot[:, 0]),
        y_orientation=tuple(float(v) for v in rot[:, 1]),
        z_orientation=tuple(float(v) for v in rot[:, 2]),
    )


def space_fields(space: Space) -> tuple[Any, ...]:
    return (
        tuple(int(s) for s in space.shape),
        tuple(float(v) for v in space.origin),
        tuple(float(v) for v in space.spacing),
        tuple(float(v) for v in space.x_orientation),
        tuple(float(v) for v in space.y_orientation),
        tuple(float(v) for v in space.z_orientation),
    )


def world(space: Space, index: tuple[int, int, int]) -> np.ndarray:
    """LPS position of a voxel index (docs/format.md section 2)."""
    axes = (space.x_orientation, space.y_orientation, space.z_orientation)
    out = np.array(space.origin, dtype=float)
    for i, spacing, axis in zip(index, space.spacing, axes, strict=True):
        out += i * float(spacing) * np.array(axis, dtype=float)
    return out


def label_volume(
    shape: tuple[int, int, int], values: list[int], dtype: Any, seed: int, noise: float = 0.02
) -> np.ndarray:
    """Random boxes of ``values`` plus a sprinkle of noise voxels."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=dtype)
    for value in values:
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape, strict=True)]
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    sprinkle = rng.random(shape) < noise
    out[sprinkle] = rng.choice(values, size=int(sprinkle.sum()))
    return out


def roundtrip(mask: SegmentationMask, **kwargs: Any) -> tuple[SegmentationMask, bytes]:
    buf = io.BytesIO()
    written = save_mask(mask, buf, **kwargs)
    data = buf.getvalue()
    assert written == len(data)
    return load_mask(io.BytesIO(data)), data


def assert_same(loaded: SegmentationMask, original: SegmentationMask) -> None:
    assert loaded.dtype == original.dtype
    assert loaded.bit_depth == original.bit_depth
    assert loaded.shape == original.shape
    assert np.array_equal(loaded.data, original.data)
    assert loaded.mapping.items() == original.mapping.items()
    assert space_fields(loaded.space) == space_fields(original.space)
    assert loaded == original


def truth(data: np.ndarray, mapping: LabelMapping) -> dict[str, tuple[int, Any]]:
    """{name: (count, inclusive bbox or None)} computed with numpy."""
    out = {}
    for name, value in mapping.items():
        where = np.nonzero(data == value)
        count = int(where[0].size)
        bbox = None if count == 0 else tuple((int(w.min()), int(w.max())) for w in where)
        out[name] = (count, bbox)
    return out


def assert_info(info: medmask.MaskInfo, mask: SegmentationMask, file_bytes: bytes) -> None:
    assert info.shape == mask.shape
    assert info.dtype == mask.dtype
    assert info.bit_depth == mask.bit_depth
    assert info.mapping.items() == mask.mapping.items()
    assert info.space is not None
    assert space_fields(info.space) == space_fields(mask.space)
    expected = truth(mask.data, mask.mapping)
    assert info.voxel_counts() == {name: c for name, (c, _) in expected.items()}
    assert info.bboxes() == {name: b for name, (_, b) in expected.items()}
    voxel = math.prod(float(s) for s in mask.space.spacing)
    assert info.volumes_mm3() == {name: c * voxel for name, (c, _) in expected.items()}
    assert info.raw_bytes == mask.data.nbytes
    n_chunks = math.prod(-(-s // c) for s, c in zip(info.shape, info.chunks, strict=True))
    meta_len = int.from_bytes(file_bytes[36:40], "little")
    payload = len(file_bytes) - HEADER_SIZE - meta_len - n_chunks * INDEX_ENTRY_SIZE
    assert info.compressed_bytes == payload
    assert info.ratio == info.raw_bytes / max(1, payload)


# --- shared data -------------------------------------------------------------------------------


def load_nifti(path: Path) -> tuple[np.ndarray, Space]:
    nib = pytest.importorskip("nibabel")
    img = nib.load(path)
    data = np.asarray(img.dataobj).transpose(2, 1, 0)
    return data, Space.from_nifti(img).reverse_axis_order()


@pytest.fixture(scope="module")
def totalseg_names(shared_data: Path) -> dict[str, int]:
    names: dict[str, int] = json.loads((shared_data / "totalseg" / "labels_total.json").read_text())
    return names


@pytest.mark.parametrize(
    "filename", ["multilabel_42.nii.gz", "multilabel_41_fast.nii.gz", "ct_dicom_seg.nii.gz"]
)
def test_shared_labelmaps_roundtrip(
    shared_data: Path, totalseg_names: dict[str, int], filename: str
) -> None:
    data, space = load_nifti(shared_data / "totalseg" / filename)
    assert data.dtype == np.uint8
    mask = SegmentationMask(data, totalseg_names, space)
    loaded, file_bytes = roundtrip(mask)
    assert_same(loaded, mask)
    assert_info(read_info(io.BytesIO(file_bytes)), mask, file_bytes)
    assert len(file_bytes) < data.nbytes / 10  # it compresses


def test_shared_organs_roundtrip(shared_data: Path, totalseg_names: dict[str, int]) -> None:
    organs = sorted((shared_data / "totalseg" / "organs").glob("*.nii.gz"))
    assert len(organs) == 117
    empty = 0
    for path in organs:
        data, space = load_nifti(path)
        name = path.name.removesuffix(".nii.gz")
        mask = SegmentationMask(data.astype(bool), {name: 1}, space)
        loaded, file_bytes = roundtrip(mask)
        assert_same(loaded, mask)
        info = read_info(io.BytesIO(file_bytes))
        assert info.voxel_counts() == {name: int(np.count_nonzero(data))}
        empty += int(not data.any())
    assert empty == 77


def test_shared_organs_as_uint8_labels(shared_data: Path, totalseg_names: dict[str, int]) -> None:
    data, space = load_nifti(shared_data / "totalseg" / "organs" / "liver.nii.gz")
    mask = SegmentationMask(data * 5, {"liver": 5}, space)  # binary, but value 5
    loaded, _ = roundtrip(mask, chunks=7)
    assert_same(loaded, mask)


# --- dtypes, shapes, chunks --------------------------------------------------------------------


@pytest.mark.parametrize("bit_depth", [1, 8, 16, 32])
@pytest.mark.parametrize(
    "shape", [(7, 13, 3), (1, 13, 7), (1, 1, 1), (2, 1, 9), (17, 5, 31)], ids=str
)
def test_dtypes_and_odd_shapes(bit_depth: int, shape: tuple[int, int, int]) -> None:
    top = {1: 1, 8: 255, 16: 65_535, 32: 4_000_000_000}[bit_depth]
    values = [1] if bit_depth == 1 else sorted({1, 2, top // 3, top})
    data = label_volume(shape, values, DTYPES[bit_depth], seed=sum(shape) + bit_depth)
    mapping = {f"label {v} ü": v for v in values}  # non-ASCII names survive
    mask = SegmentationMask(data, mapping, rotated_space(shape, seed=bit_depth))
    assert mask.bit_depth == bit_depth
    loaded, file_bytes = roundtrip(mask)
    assert_same(loaded, mask)
    assert_info(read_info(io.BytesIO(file_bytes)), mask, file_bytes)


@pytest.mark.parametrize("bit_depth", [1, 8, 16, 32])
@pytest.mark.parametrize("fill", ["zero", "one", "single"])
def test_constant_and_single_voxel(bit_depth: int, fill: str) -> None:
    shape = (5, 6, 7)
    data = np.zeros(shape, dtype=DTYPES[bit_depth])
    value = 1 if bit_depth == 1 else {8: 200, 16: 300, 32: 70_000}[bit_depth]
    if fill == "one":
        data[...] = value
    elif fill == "single":
        data[4, 0, 6] = value
    mask = SegmentationMask(data, {"thing": value}, bit_depth=bit_depth)
    loaded, file_bytes = roundtrip(mask, chunks=(2, 4, 4))
    assert_same(loaded, mask)
    info = read_info(io.BytesIO(file_bytes))
    assert_info(info, mask, file_bytes)
    if fill == "zero":
        assert info.compressed_bytes == 0  # every chunk is all zero: nothing stored
        assert info.bboxes() == {"thing": None}
    if fill == "single":
        assert info.bboxes() == {"thing": ((4, 4), (0, 0), (6, 6))}
        assert info.voxel_counts() == {"thing": 1}


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (None, (7, 13, 3)),
        (1, (1, 13, 3)),
        (2, (2, 13, 3)),
        (100, (7, 13, 3)),
        ((3, 5, 2), (3, 5, 2)),
        ((1, 1, 1), (1, 1, 1)),
        ((4, 100, 1), (4, 13, 1)),
        ([7, 13, 3], (7, 13, 3)),
        ((np.int64(2), 6, 2), (2, 6, 2)),
    ],
    ids=str,
)
def test_explicit_chunks(chunks: object, expected: tuple[int, int, int]) -> None:
    shape = (7, 13, 3)
    mask = SegmentationMask(
        label_volume(shape, [1, 2, 3], np.uint8, seed=5), {"a": 1, "b": 2, "c": 3}
    )
    loaded, file_bytes = roundtrip(mask, chunks=chunks)
    assert_same(loaded, mask)
    info = read_info(io.BytesIO(file_bytes))
    assert info.chunks == expected
    with MaskFile(io.BytesIO(file_bytes)) as f:
        assert len(f.index) == math.prod(-(-s // c) for s, c in zip(shape, expected, strict=True))


@pytest.mark.parametrize("chunks", [0, -1, (1, 2), (1, 0, 1), (1.5, 2, 2), "3", True])
def test_invalid_chunks(chunks: object) -> None:
    mask = SegmentationMask(np.ones((2, 3, 4), bool), {"a": 1})
    with pytest.raises(ValueError, match="Expected chunks"):
        save_mask(mask, io.BytesIO(), chunks=chunks)


@pytest.mark.parametrize("level", [1, 3, 19])
def test_levels_roundtrip(level: int) -> None:
    mask = SegmentationMask(
        label_volume((9, 20, 20), [1, 2, 40], np.uint8, 1), {"a": 1, "b": 2, "c": 40}
    )
    loaded, _ = roundtrip(mask, level=level)
    assert_same(loaded, mask)


def test_attributes_are_stored(tmp_path: Path) -> None:
    mask = SegmentationMask(np.ones((2, 3, 4), bool), {"a": 1})
    path = tmp_path / "a.msk"
    save_mask(mask, path, attributes={"study": "x", "n": [1, 2]})
    with MaskFile(path) as f:
        assert f.metadata["attributes"] == {"study": "x", "n": [1, 2]}
        assert f.descriptor.attributes == {"study": "x", "n": [1, 2]}
        assert f.metadata["format"] == "medmask.msk"
        assert f.metadata["created_by"].startswith("medmask ")


def test_save_rejects_non_masks() -> None:
    with pytest.raises(TypeError, match="Expected a SegmentationMask"):
        save_mask(np.zeros((2, 2, 2), bool), io.BytesIO())  # type: ignore[arg-type]


def test_mapping_with_unused_names_and_background_name() -> None:
    data = np.zeros((3, 4, 5), np.uint8)
    data[1, 2, 3] = 9
    mapping = {"background": 0, "tumour": 9, "absent": 4}
    mask = SegmentationMask(data, mapping)
    loaded, file_bytes = roundtrip(mask)
    assert_same(loaded, mask)
    info = read_info(io.BytesIO(file_bytes))
    assert info.voxel_counts() == {"background": 59, "tumour": 1, "absent": 0}
    assert info.bboxes()["absent"] is None
    assert info.bboxes()["tumour"] == ((1, 1), (2, 2), (3, 3))


# --- hypothesis --------------------------------------------------------------------------------


@st.composite
def masks(draw: st.DrawFn) -> tuple[SegmentationMask, object]:
    shape = tuple(draw(st.integers(1, 12)) for _ in range(3))
    bit_depth = draw(st.sampled_from([1, 8, 16, 32]))
    top = {1: 1, 8: 255, 16: 65_535, 32: 2**32 - 1}[bit_depth]
    data = np.zeros(shape, dtype=DTYPES[bit_depth])
    values: set[int] = set()
    for _ in range(draw(st.integers(0, 6))):  # label-structured: boxes of labels
        value = draw(st.integers(1, top))
        lo = [draw(st.integers(0, s - 1)) for s in shape]
        hi = [draw(st.integers(a + 1, s)) for a, s in zip(lo, shape, strict=True)]
        data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
        values.add(value)
    seed = draw(st.integers(0, 2**32 - 1))
    noise = draw(st.sampled_from([0.0, 0.05, 0.5]))
    if noise:  # plus random noise voxels
        rng = np.random.default_rng(seed)
        where = rng.random(shape) < noise
        noise_values = rng.integers(1, top, size=3, endpoint=True)
        data[where] = rng.choice(noise_values, size=int(where.sum()))
        values.update(int(v) for v in noise_values)
    mapping = {f"v{v}": v for v in sorted(values)}
    chunks = draw(
        st.one_of(
            st.none(),
            st.integers(1, 13),
            st.tuples(st.integers(1, 13), st.integers(1, 13), st.integers(1, 13)),
        )
    )
    space = rotated_space(shape, seed=seed % 1000) if draw(st.booleans()) else None
    mask = SegmentationMask(data, mapping, space, bit_depth=bit_depth)
    return mask, chunks


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks())
def test_hypothesis_roundtrip(case: tuple[SegmentationMask, object]) -> None:
    mask, chunks = case
    loaded, file_bytes = roundtrip(mask, chunks=chunks)
    assert_same(loaded, mask)
    assert_info(read_info(io.BytesIO(file_bytes)), mask, file_bytes)


@settings(max_examples=40, deadline=None)
@given(masks(), st.data())
def test_hypothesis_roi(case: tuple[SegmentationMask, object], data: st.DataObject) -> None:
    mask, chunks = case
    buf = io.BytesIO()
    save_mask(mask, buf, chunks=chunks)
    roi = []
    for s in mask.shape:
        start = data.draw(st.integers(0, s - 1))
        roi.append(slice(start, data.draw(st.integers(start + 1, s))))
    part = load_mask(buf, roi=tuple(roi))
    assert np.array_equal(part.data, mask.data[tuple(roi)])
    assert part.mapping == mask.mapping
    assert np.allclose(part.space.origin, world(mask.space, tuple(r.start for r in roi)))


# --- ROI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roi_case() -> tuple[SegmentationMask, bytes]:
    shape = (12, 17, 9)
    data = label_volume(shape, [1, 2, 300], np.uint16, seed=3, noise=0.1)
    mask = SegmentationMask(data, {"a": 1, "b": 2, "c": 300}, rotated_space(shape, seed=4))
    buf = io.BytesIO()
    save_mask(mask, buf, chunks=(5, 4, 3))
    return mask, buf.getvalue()


@pytest.mark.parametrize(
    ("roi", "normalised"),
    [
        ((slice(None), slice(None), slice(None)), (slice(0, 12), slice(0, 17), slice(0, 9))),
        ((slice(2, 7), slice(3, 16), slice(1, 2)), None),
        ((slice(0, 1), slice(0, 1), slice(0, 1)), None),
        ((slice(11, 12), slice(16, 17), slice(8, 9)), None),
        ((slice(4, 5), slice(4, 8), slice(3, 6)), None),  # exactly one chunk
        ((3, slice(None), 8), (slice(3, 4), slice(0, 17), slice(8, 9))),
        ((-1, slice(-5, None), slice(None, -2)), (slice(11, 12), slice(12, 17), slice(0, 7))),
        ((np.int64(2), slice(5, 100), slice(0, 9, 1)), (slice(2, 3), slice(5, 17), slice(0, 9))),
        ([slice(1, 3), slice(2, 4), slice(3, 5)], (slice(1, 3), slice(2, 4), slice(3, 5))),
    ],
    ids=str,
)
def test_roi_reads(roi_case: tuple[SegmentationMask, bytes], roi: Any, normalised: Any) -> None:
    mask, file_bytes = roi_case
    norm = roi if normalised is None else normalised
    part = load_mask(io.BytesIO(file_bytes), roi=roi)
    assert np.array_equal(part.data, mask.data[norm])
    assert part.dtype == mask.dtype
    assert part.mapping == mask.mapping
    assert tuple(part.space.shape) == part.shape
    assert np.allclose(
        part.space.origin, world(mask.space, tuple(s.start for s in norm)), atol=1e-9
    )
    assert tuple(part.space.spacing) == tuple(mask.space.spacing)
    assert tuple(part.space.x_orientation) == tuple(mask.space.x_orientation)
    assert tuple(part.space.z_orientation) == tuple(mask.space.z_orientation)
    with MaskFile(io.BytesIO(file_bytes)) as f:
        assert np.array_equal(f.read_array(roi), mask.data[norm])


@pytest.mark.parametrize(
    "roi",
    [
        (slice(0, 10, 2), slice(None), slice(None)),
        (slice(None), slice(None, None, -1), slice(None)),
        (slice(3, 3), slice(None), slice(None)),
        (slice(5, 2), slice(None), slice(None)),
        (slice(None), slice(None), slice(20, 30)),
        (100, slice(None), slice(None)),
        (slice(None), slice(None)),
        (slice(None),) * 4,
        (),
        ("a", slice(None), slice(None)),
        (1.5, slice(None), slice(None)),
        slice(0, 2),
        "zyx",
    ],
    ids=str,
)
def test_invalid_roi(roi_case: tuple[SegmentationMask, bytes], roi: Any) -> None:
    _, file_bytes = roi_case
    with pytest.raises(ValueError, match="Expected"):
        load_mask(io.BytesIO(file_bytes), roi=roi)


# --- MaskFile, SegmentationMask.save/load ------------------------------------------------------


def test_maskfile(tmp_path: Path, roi_case: tuple[SegmentationMask, bytes]) -> None:
    mask, file_bytes = roi_case
    path = tmp_path / "m.msk"
    path.write_bytes(file_bytes)
    with MaskFile(path) as f:
        assert f.name == str(path)
        assert f.mapping == mask.mapping
        assert space_fields(f.space) == space_fields(mask.space)
        assert f.descriptor.grid == (3, 5, 3)
        assert len(f.index) == 45
        assert "shape=(12, 17, 9)" in repr(f)
        total = stored = 0
        for i in range(45):
            rng = f.chunk_byte_range(i)
            if rng is None:  # an all-zero chunk stores nothing
                assert not mask.data[f.descriptor.chunk_box(i)].any()
                continue
            start, end = rng
            assert file_bytes[start:end][:3] == b"MMC"  # a codec stream starts there
            total += end - start
            stored += 1
        assert stored >= 40
        assert total == f.info().compressed_bytes
        assert f.read() == mask
        assert np.array_equal(f.read_array(), mask.data)


def test_chunk_byte_range_of_empty_chunk() -> None:
    data = np.zeros((4, 4, 4), bool)
    data[3, 3, 3] = True
    buf = io.BytesIO()
    save_mask(SegmentationMask(data, {"x": 1}), buf, chunks=2)
    with MaskFile(buf) as f:
        assert f.chunk_byte_range(0) is None
        assert f.chunk_byte_range(1) is not None
        assert int(f.index["length"][0]) == 0


def test_segmentation_mask_save_and_load(tmp_path: Path) -> None:
    shape = (6, 7, 8)
    mask = SegmentationMask(
        label_volume(shape, [1, 2], np.uint8, seed=9), {"left": 1, "right": 2}, rotated_space(shape)
    )
    path = tmp_path / "mask.msk"
    assert mask.save(path) is None
    assert path.read_bytes()[:8] == b"\x89MSK\r\n\x1a\n"
    assert_same(SegmentationMask.load(path), mask)
    mask.save(str(path), chunks=(2, 3, 4))  # keyword arguments pass through
    assert MaskFile(path).descriptor.chunks == (2, 3, 4)
    part = SegmentationMask.load(str(path), roi=(slice(1, 3), slice(None), slice(None)))
    assert np.array_equal(part.data, mask.data[1:3])


def test_loaded_mask_is_read_only_and_owned() -> None:
    mask = SegmentationMask(np.ones((2, 3, 4), np.uint8) * 3, {"a": 3})
    loaded, _ = roundtrip(mask)
    assert not loaded.data.flags.writeable
    loaded.add_label(np.zeros((2, 3, 4), bool), 4, "b")  # still a working mask
    assert loaded.mapping["b"] == 4
