"""``MedmaskBackendEntrypoint``: ``.msk`` / ``.mska`` as xarray Datasets and DataTrees.

Values against ``load_mask`` / ``MaskArchive``, coordinates against every voxel's world
position (nibabel's for the real TotalSegmentator file, ``voxel_to_world`` for flipped,
permuted and oblique spaces), CF flags, laziness (dask chunks = file chunks, no chunk read at
open, counted on the local S3 server) and errors.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.array
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
import xarray as xr
from spacetransformer import Space

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.errors import (
    AllocationLimitError,
    ChecksumError,
    FormatError,
    InvalidTypeError,
    MaskFileNotFoundError,
    MemberNotFoundError,
)
from medmask.geometry import voxel_to_world
from medmask.io import HEAD_GUESS
from medmask.xarray_backend import MedmaskBackendEntrypoint, flag_meaning, world_coordinates
from servers import BucketFixture

ENGINE = MedmaskBackendEntrypoint
CHUNKS = (8, 32, 32)


# --- data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> tuple[Path, dict[str, int]]:
    labels = json.loads((shared_data / "totalseg" / "labels_total.json").read_text())
    return shared_data / "totalseg" / "multilabel_42.nii.gz", labels


@pytest.fixture(scope="module")
def multilabel(totalseg: tuple[Path, dict[str, int]]) -> SegmentationMask:
    nifti, labels = totalseg
    return medmask.from_nifti(nifti, labels)


@pytest.fixture(scope="module")
def msk(multilabel: SegmentationMask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xr") / "total.msk"
    medmask.save_mask(multilabel, path, chunks=CHUNKS)
    return path


@pytest.fixture(scope="module")
def mska(
    multilabel: SegmentationMask, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Members: ``noise`` (random, first: pushes the rest beyond the first 64 KiB read),
    ``total`` (117-label map), ``kidney left`` (binary, a name with a blank) and a layer
    ``layer_0`` of two boxes from ``add_structures``."""
    path = tmp_path_factory.mktemp("xr") / "case.mska"
    space = multilabel.space
    shape = multilabel.shape
    organ = medmask.from_nifti(shared_data / "totalseg" / "organs" / "kidney_left.nii.gz")
    rng = np.random.default_rng(0)
    boxes = {name: np.zeros(shape, bool) for name in ("tumour a", "tumour b")}
    boxes["tumour a"][2:5, 10:20, 10:20] = True
    boxes["tumour b"][10:12, 40:60, 50:70] = True
    with MaskArchive(path, "w", space=space) as archive:
        noise = rng.integers(0, 200, shape, dtype=np.uint8)
        archive.add_segmask(
            SegmentationMask(noise, {f"noise_{v}": v for v in range(1, 200)}, space), "noise"
        )
        archive.add_segmask(multilabel, "total", chunks=CHUNKS)
        kidney = SegmentationMask(organ.data != 0, {"kidney left": 1}, space)
        archive.add_segmask(kidney, "kidney left", chunks=CHUNKS)
        archive.add_structures(boxes)
    assert path.stat().st_size > 3 * HEAD_GUESS
    return path


def _all_voxels(shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    return np.indices(shape).reshape(3, -1).T


def _save(tmp_path: Path, space: Space, name: str = "m.msk") -> tuple[Path, SegmentationMask]:
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint8)
    data[1:3, 2:4, 1:5] = 2
    data[0, 0, 0] = 7
    mask = SegmentationMask(data, {"kidney": 2, "cyst": 7}, space)
    medmask.save_mask(mask, tmp_path / name)
    return tmp_path / name, mask


def _rotation(angle: float, axis: int) -> npt.NDArray[np.float64]:
    c, s = np.cos(angle), np.sin(angle)
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _space(rows: npt.ArrayLike, shape: tuple[int, int, int] = (4, 5, 6)) -> Space:
    """A space whose array axis ``a`` runs along ``rows[a]`` (unit LPS vectors)."""
    d = np.asarray(rows, dtype=np.float64)
    return Space(
        shape=shape,
        origin=(10.0, -5.0, 3.0),
        spacing=(2.0, 0.5, 0.75),
        x_orientation=tuple(d[0]),
        y_orientation=tuple(d[1]),
        z_orientation=tuple(d[2]),
    )


# --- values --------------------------------------------------------------------------------------


def test_msk_values_equal_load_mask(msk: Path) -> None:
    ds = xr.open_dataset(msk, engine=ENGINE)
    assert list(ds.data_vars) == ["mask"]
    assert ds["mask"].dims == ("z", "y", "x")
    expected = medmask.load_mask(msk)
    assert ds["mask"].dtype == expected.data.dtype
    np.testing.assert_array_equal(ds["mask"].values, expected.data)


def test_msk_structures(msk: Path, multilabel: SegmentationMask) -> None:
    ds = xr.open_dataset(msk, engine=ENGINE, group="structures")
    assert sorted(ds.data_vars) == sorted(multilabel.mapping.names())
    liver = ds["liver"]
    assert liver.attrs["member"] == "mask"
    assert liver.attrs["value"] == multilabel.mapping["liver"]
    np.testing.assert_array_equal(liver.values, multilabel.data == multilabel.mapping["liver"])


def test_mska_one_variable_per_member_equal_to_the_archive(mska: Path) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE)
    with MaskArchive(mska) as archive:
        names = archive.all_names()
        assert list(ds.data_vars) == names
        for name in names:
            expected = archive.load_segmask(name).data
            assert ds[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(ds[name].values, expected, err_msg=name)
    assert ds["total"].attrs["layer"] is False
    assert ds["layer_0"].attrs["layer"] is True
    assert ds["kidney left"].dtype == np.bool_


@pytest.mark.parametrize("group", ["total", "/total", "kidney left"])
def test_group_opens_one_member(mska: Path, group: str) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE, group=group)
    name = group.strip("/")
    assert list(ds.data_vars) == [name]
    assert ds.attrs["group"] == name
    with MaskArchive(mska) as archive:
        np.testing.assert_array_equal(ds[name].values, archive.load_segmask(name).data)


def test_group_structures_is_one_bool_variable_per_unambiguous_structure(mska: Path) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE, group="structures", chunks={})
    with MaskArchive(mska) as archive:
        holders: dict[str, int] = {}
        for name in archive.all_names():
            for label in archive.load_segmask(name).mapping.names():
                holders[label] = holders.get(label, 0) + 1
        unambiguous = sorted(n for n, count in holders.items() if count == 1)
        assert sorted(ds.data_vars) == unambiguous
        for name in ("tumour a", "spleen", "noise_17"):
            variable = ds[name]
            assert variable.dtype == np.bool_
            assert variable.attrs["structure"] == name
            np.testing.assert_array_equal(
                variable.values, archive.get_binary_mask_by_names(name), err_msg=name
            )
    assert ds["spleen"].attrs["member"] == "total"
    assert ds["spleen"].attrs["value"] == 1


def test_group_one_structure(mska: Path) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE, group="structures/tumour b")
    assert list(ds.data_vars) == ["tumour b"]
    with MaskArchive(mska) as archive:
        np.testing.assert_array_equal(
            ds["tumour b"].values, archive.get_binary_mask_by_names("tumour b")
        )


def test_drop_variables(mska: Path) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE, drop_variables=["noise", "layer_0"])
    assert list(ds.data_vars) == ["total", "kidney left"]
    assert list(xr.open_dataset(mska, engine=ENGINE, drop_variables="noise").data_vars) == [
        "total",
        "kidney left",
        "layer_0",
    ]


def test_member_named_like_a_dimension_gets_an_escaped_variable(tmp_path: Path) -> None:
    space = _space([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    _, mask = _save(tmp_path, space)
    archive_path = tmp_path / "dims.mska"
    with MaskArchive(archive_path, "w", space=space) as archive:
        archive.add_segmask(mask, "x")
    ds = xr.open_dataset(archive_path, engine=ENGINE)
    assert list(ds.data_vars) == ["%78"]
    assert ds["%78"].attrs["member"] == "x"
    np.testing.assert_array_equal(ds["%78"].values, mask.data)
    assert ds["x"].dims == ("x",)  # the coordinate


# --- coordinates ---------------------------------------------------------------------------------


def test_coordinates_are_nibabels_world_position_of_every_voxel(
    msk: Path, totalseg: tuple[Path, dict[str, int]]
) -> None:
    img = nib.load(totalseg[0])
    ds = xr.open_dataset(msk, engine=ENGINE)
    ijk = _all_voxels(img.shape)  # nibabel's (i, j, k) = (x, y, z) array index
    ras = nib.affines.apply_affine(img.affine, ijk)
    lps = ras * [-1, -1, 1]
    i, j, k = ijk.T
    np.testing.assert_allclose(ds["x"].values[i], lps[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ds["y"].values[j], lps[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ds["z"].values[k], lps[:, 2], rtol=0, atol=1e-9)
    assert np.all(np.diff(ds["x"].values) < 0)  # RAS storage: LPS x and y decrease
    for dim in "zyx":
        assert ds[dim].attrs["units"] == "mm"
        assert ds[dim].dims == (dim,)
    np.testing.assert_allclose(ds["mask"].attrs["affine"], img.affine, atol=1e-9)


@pytest.mark.parametrize(
    "rows",
    [
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],  # axis 0 to superior, 1 to posterior, 2 to left
        [[0, 0, -1], [0, 1, 0], [-1, 0, 0]],  # z and x flipped
        [[0, 0, 1], [0, -1, 0], [1, 0, 0]],  # y flipped (left-handed)
        [[0, 0, -1], [0, -1, 0], [-1, 0, 0]],  # all flipped
    ],
    ids=["plain", "flip-zx", "flip-y", "flip-all"],
)
def test_coordinates_of_flipped_spaces_are_every_voxels_world_position(
    tmp_path: Path, rows: list[list[int]]
) -> None:
    space = _space(rows)
    path, _ = _save(tmp_path, space)
    ds = xr.open_dataset(path, engine=ENGINE)
    index = _all_voxels(space.shape)
    world = voxel_to_world(space, index)
    z, y, x = index.T
    np.testing.assert_allclose(ds["x"].values[x], world[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["y"].values[y], world[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["z"].values[z], world[:, 2], rtol=0, atol=1e-12)
    for dim, axis in zip("zyx", range(3), strict=True):
        step = np.diff(ds[dim].values)
        np.testing.assert_allclose(step, space.spacing[axis] * rows[axis][2 - axis])


def _check_affines(ds: xr.Dataset, mask: SegmentationMask) -> None:
    """Attributes of the Dataset and its variable: the geometry, and affines that put every
    voxel where ``voxel_to_world`` does."""
    space = mask.space
    for attrs in (ds.attrs, ds["mask"].attrs):
        np.testing.assert_array_equal(attrs["affine_lps"], mask.affine_lps)
        np.testing.assert_array_equal(attrs["affine"], mask.affine)
        assert attrs["spacing"] == list(space.spacing)
        assert attrs["origin"] == list(space.origin)
        np.testing.assert_array_equal(
            attrs["direction"], [space.x_orientation, space.y_orientation, space.z_orientation]
        )
    index = _all_voxels(space.shape)  # (z, y, x)
    xyz1 = np.column_stack([index[:, ::-1], np.ones(len(index))])  # (x, y, z, 1)
    lps = xyz1 @ np.asarray(ds["mask"].attrs["affine_lps"]).T
    np.testing.assert_allclose(lps[:, :3], voxel_to_world(space, index), atol=1e-9)
    ras = xyz1 @ np.asarray(ds["mask"].attrs["affine"]).T
    np.testing.assert_allclose(ras[:, :3] * [-1, -1, 1], lps[:, :3], atol=1e-9)


@pytest.mark.parametrize(
    "rows",
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # Space()'s default: axis 0 along world x
        [[0, 1, 0], [0, 0, 1], [1, 0, 0]],  # a coronal stack: axis 0 along world y
        [[0, 0, 1], [1, 0, 0], [0, -1, 0]],  # y and x swapped, one flipped
    ],
    ids=["default", "coronal", "swapped"],
)
def test_permuted_spaces_get_no_coordinates_and_the_affines(
    tmp_path: Path, rows: list[list[int]]
) -> None:
    space = _space(rows)
    path, mask = _save(tmp_path, space)
    ds = xr.open_dataset(path, engine=ENGINE)
    assert not ds.coords  # a coordinate "x" on an axis that runs along world y would lie
    assert world_coordinates(space) is None
    _check_affines(ds, mask)
    np.testing.assert_array_equal(ds["mask"].values, mask.data)


def test_oblique_space_gets_no_coordinates_and_nibabels_affine(tmp_path: Path) -> None:
    rows = _rotation(0.3, 2) @ _rotation(-0.2, 0) @ np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0.0]])
    space = _space(rows.T)
    path, mask = _save(tmp_path, space)
    ds = xr.open_dataset(path, engine=ENGINE)
    assert not ds.coords
    _check_affines(ds, mask)
    np.testing.assert_allclose(ds["mask"].attrs["affine"], medmask.to_nibabel(mask).affine)


@pytest.mark.parametrize(("angle", "aligned"), [(1e-7, True), (1e-5, False)])
def test_a_tilt_gets_coordinates_only_within_a_micrometre_everywhere(
    tmp_path: Path, angle: float, aligned: bool
) -> None:
    # axis x tilted towards world y: off by 999 * sin(angle) mm at the far end
    rows = _rotation(angle, 2) @ np.array([[0, 0, 1.0], [0, 1, 0], [1, 0, 0]]).T
    space = Space(
        shape=(2, 3, 1000),
        origin=(0.0, 0.0, 0.0),
        spacing=(1.0, 1.0, 1.0),
        x_orientation=tuple(rows[:, 0]),
        y_orientation=tuple(rows[:, 1]),
        z_orientation=tuple(rows[:, 2]),
    )
    path, _ = _save(tmp_path, space)
    ds = xr.open_dataset(path, engine=ENGINE)
    assert ("x" in ds.coords) is aligned
    if aligned:
        index = _all_voxels(space.shape)
        world = voxel_to_world(space, index)
        z, y, x = index.T
        coords = np.column_stack([ds["x"].values[x], ds["y"].values[y], ds["z"].values[z]])
        assert np.abs(coords - world).max() <= 1e-3


# --- labels --------------------------------------------------------------------------------------


def test_label_map_flags_and_exact_names(mska: Path, multilabel: SegmentationMask) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE)
    attrs = ds["total"].attrs
    mapping = dict(multilabel.mapping.items())
    ordered = sorted(mapping.items(), key=lambda item: item[1])
    assert attrs["flag_values"].dtype == np.uint8
    assert attrs["flag_values"].tolist() == [v for _, v in ordered]
    assert attrs["flag_meanings"].split(" ") == [n for n, _ in ordered]  # no blanks in names
    assert json.loads(attrs["labels"]) == mapping
    stats = json.loads(attrs["label_stats"])
    assert stats["liver"]["count"] == int((multilabel.data == mapping["liver"]).sum())


def test_binary_member_flag_is_its_name(mska: Path) -> None:
    ds = xr.open_dataset(mska, engine=ENGINE)
    attrs = ds["kidney left"].attrs
    assert attrs["flag_values"].tolist() == [1]
    assert attrs["flag_meanings"] == "kidney_left"
    assert json.loads(attrs["labels"]) == {"kidney left": 1}  # the exact name survives
    layer = ds["layer_0"].attrs
    assert layer["flag_meanings"].split() == ["tumour_a", "tumour_b"]
    assert json.loads(layer["labels"]) == dict(
        zip(["tumour a", "tumour b"], layer["flag_values"].tolist(), strict=True)
    )


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("left kidney", "left_kidney"),
        ("a/b\tc", "a_b_c"),
        ("Lebersegment-IV.2+", "Lebersegment-IV.2+"),
        ("côte@1", "côte@1"),
    ],
)
def test_flag_meaning(name: str, word: str) -> None:
    assert flag_meaning(name) == word


# --- laziness ------------------------------------------------------------------------------------


def test_chunks_are_the_files_chunks(msk: Path, multilabel: SegmentationMask) -> None:
    ds = xr.open_dataset(msk, engine=ENGINE, chunks={})
    data = ds["mask"].data
    assert isinstance(data, dask.array.Array)
    assert data.chunks == dask.array.core.normalize_chunks(CHUNKS, multilabel.shape)
    assert ds["mask"].encoding["preferred_chunks"] == dict(zip("zyx", CHUNKS, strict=True))
    np.testing.assert_array_equal(data.compute(), multilabel.data)
    auto = xr.open_dataset(msk, engine=ENGINE, chunks="auto")["mask"].data
    for sizes, size in zip(auto.chunks, CHUNKS, strict=True):  # "auto" splits at file chunks
        assert all(edge % size == 0 for edge in np.cumsum(sizes)[:-1])


def test_chunked_dataset_pickles(msk: Path, multilabel: SegmentationMask) -> None:
    ds = pickle.loads(pickle.dumps(xr.open_dataset(msk, engine=ENGINE, chunks={})))
    np.testing.assert_array_equal(ds["mask"].values, multilabel.data)


def test_every_chunk_read_is_checked(tmp_path: Path, msk: Path) -> None:
    damaged = tmp_path / "damaged.msk"
    data = bytearray(msk.read_bytes())
    with medmask.MaskFile(msk) as f:
        span = next(
            s for s in (f.chunk_byte_range(c) for c in range(len(f.index))) if s is not None
        )
    data[(span[0] + span[1]) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    ds = xr.open_dataset(damaged, engine=ENGINE, chunks={})  # the directory is intact
    with pytest.raises(ChecksumError, match=re.escape(str(damaged))):
        ds["mask"].compute()


def _chunk_spans(path: Path, member: str) -> dict[tuple[int, int, int], tuple[int, int]]:
    """Byte range of each stored chunk of ``member``, by chunk grid position."""
    with MaskArchive(path) as archive:
        found = archive._directory.member(member)
        assert found is not None
        _, gy, gx = found.descriptor.grid
        index = found.index
    return {
        (cid // (gy * gx), cid // gx % gy, cid % gx): (int(offset), int(offset + length))
        for cid, (offset, length) in enumerate(zip(index["offset"], index["length"], strict=True))
        if length
    }


@pytest.mark.parametrize("chunks", [None, {}])
def test_s3_open_reads_only_the_directory_then_only_the_chunks_asked_for(
    s3: BucketFixture, mska: Path, chunks: dict[str, int] | None
) -> None:
    s3.fs.put_file(str(mska), s3.path("case.mska"))
    s3.log.clear()
    ds = xr.open_dataset(
        s3.url("case.mska"), engine=ENGINE, storage_options=s3.storage_options, chunks=chunks
    )
    assert list(ds.data_vars) == ["noise", "total", "kidney left", "layer_0"]
    assert "x" in ds.coords
    assert s3.log.get_ranges("case.mska") == [(0, HEAD_GUESS)], s3.log.summary()
    assert not any(r.method == "HEAD" for r in s3.log.requests)
    s3.log.clear()
    top = ds["total"].isel(z=slice(0, CHUNKS[0])).values  # the first z-slab of chunks
    with MaskArchive(mska) as archive:
        np.testing.assert_array_equal(top, archive.load_segmask("total").data[: CHUNKS[0]])
    spans = [span for pos, span in _chunk_spans(mska, "total").items() if pos[0] == 0]
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    got = s3.log.get_ranges("case.mska")
    assert got, s3.log.summary()
    assert all(lo <= s and e <= hi for s, e in got), (got, (lo, hi))


def test_s3_values_coordinates_and_flags(s3: BucketFixture, mska: Path, msk: Path) -> None:
    s3.fs.put_file(str(mska), s3.path("case.mska"))
    local = xr.open_dataset(mska, engine=ENGINE)
    remote = xr.open_dataset(
        s3.url("case.mska"), engine=ENGINE, storage_options=s3.storage_options, chunks={}
    )
    xr.testing.assert_identical(remote.compute(), local.compute())
    assert remote["total"].attrs["flag_meanings"] == local["total"].attrs["flag_meanings"]
    s3.fs.put_file(str(msk), s3.path("total.msk"))
    single = xr.open_dataset(s3.url("total.msk"), engine=ENGINE, storage_options=s3.storage_options)
    np.testing.assert_array_equal(single["mask"].values, medmask.load_mask(msk).data)


# --- DataTree ------------------------------------------------------------------------------------


def test_open_datatree_one_node_per_member(mska: Path) -> None:
    tree = xr.open_datatree(mska, engine=ENGINE, chunks={})
    assert list(tree.children) == ["noise", "total", "kidney left", "layer_0"]
    assert set(tree.coords) == {"z", "y", "x"}
    assert tree.attrs["container"] == "mska"
    with MaskArchive(mska) as archive:
        for name, node in tree.children.items():
            variable = node[name]
            assert isinstance(variable.data, dask.array.Array)
            np.testing.assert_array_equal(
                variable.values, archive.load_segmask(name).data, err_msg=name
            )
    np.testing.assert_array_equal(tree["total"]["x"].values, tree["x"].values)  # inherited
    assert tree["total"]["total"].attrs["flag_meanings"].split()[0] == "spleen"


def test_open_datatree_escapes_slashes_and_opens_a_group(tmp_path: Path) -> None:
    space = _space([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    _, mask = _save(tmp_path, space)
    path = tmp_path / "slash.mska"
    with MaskArchive(path, "w", space=space) as archive:
        archive.add_segmask(mask, "a/b")
        archive.add_segmask(mask, "c")
    tree = xr.open_datatree(path, engine=ENGINE)
    assert list(tree.children) == ["a%2Fb", "c"]
    assert tree["a%2Fb"]["a%2Fb"].attrs["member"] == "a/b"
    groups = xr.open_groups(path, engine=ENGINE)
    assert list(groups) == ["/", "/a%2Fb", "/c"]
    one = xr.open_datatree(path, engine=ENGINE, group="c")
    assert list(one.data_vars) == ["c"]
    assert not one.children


def test_open_datatree_of_a_msk(msk: Path, multilabel: SegmentationMask) -> None:
    tree = xr.open_datatree(msk, engine=ENGINE)
    assert list(tree.children) == ["mask"]
    np.testing.assert_array_equal(tree["mask"]["mask"].values, multilabel.data)


# --- the entry point -----------------------------------------------------------------------------


def test_engine_name_resolves_through_the_entry_point(msk: Path) -> None:
    """Needs the package installed with this pyproject (the ``xarray.backends`` entry point)."""
    assert "medmask" in xr.backends.list_engines()
    ds = xr.open_dataset(msk, engine="medmask", chunks={})
    np.testing.assert_array_equal(ds["mask"].values, medmask.load_mask(msk).data)
    guessed = xr.open_dataset(msk)  # no engine: guess_can_open picks medmask by the suffix
    np.testing.assert_array_equal(guessed["mask"].values, medmask.load_mask(msk).data)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("case.msk", True),
        ("s3://bucket/dir/case.mska", True),
        (Path("/data/CASE.MSKA"), True),
        ("https://host/case.msk?version=3", True),
        ("case.nii.gz", False),
        ("case.nc", False),
        ("case.msk/other", False),
        (b"case.msk", False),
    ],
)
def test_guess_can_open(target: Any, expected: bool) -> None:
    assert MedmaskBackendEntrypoint().guess_can_open(target) is expected


def test_listing_engines_imports_neither_zarr_nor_dask() -> None:
    """xarray imports every backend to list its engines: ours must stay cheap to import."""
    code = (
        "import sys, medmask.xarray_backend\n"
        "print([m for m in ('zarr', 'dask', 'medmask.zarr_store') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_entry_point_describes_itself() -> None:
    backend = MedmaskBackendEntrypoint()
    assert backend.open_dataset_parameters == (
        "filename_or_obj",
        "drop_variables",
        "group",
        "storage_options",
        "max_voxels",
        "max_bytes",
    )
    assert backend.description
    assert backend.url.endswith("docs/xarray.md")
    assert backend.supports_groups


# --- errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mska"
    with pytest.raises(MaskFileNotFoundError, match=re.escape(str(missing))):
        xr.open_dataset(missing, engine=ENGINE)


def test_not_a_medmask_file(totalseg: tuple[Path, dict[str, int]]) -> None:
    nifti = totalseg[0]
    with pytest.raises(FormatError, match=re.escape(str(nifti)) + r".*not a \.msk"):
        xr.open_dataset(nifti, engine=ENGINE)


def test_unknown_group_names_the_file_and_the_members(mska: Path) -> None:
    with pytest.raises(MemberNotFoundError) as info:
        xr.open_dataset(mska, engine=ENGINE, group="totl")
    message = str(info.value)
    assert str(mska) in message
    for name in ("'noise'", "'total'", "'kidney left'", "'layer_0'", "'structures'"):
        assert name in message
    assert "Did you mean 'total'" in message
    with pytest.raises(
        MemberNotFoundError, match=r"no group 'structures/livr'.*'structures/liver'"
    ):
        xr.open_datatree(mska, engine=ENGINE, group="structures/livr")


@pytest.mark.parametrize("source", [b"case.msk", 3])
def test_not_a_path(source: object) -> None:
    with pytest.raises(InvalidTypeError, match=r"engine='medmask'.*path or fsspec URL"):
        MedmaskBackendEntrypoint().open_dataset(source)


def test_limits_apply(msk: Path) -> None:
    with pytest.raises(AllocationLimitError, match=re.escape(str(msk))):
        xr.open_dataset(msk, engine=ENGINE, max_voxels=1000)
