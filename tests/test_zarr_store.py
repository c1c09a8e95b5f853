"""``ArchiveStore`` / ``open_zarr``: archives and masks as zarr v3 arrays, from any URL.

``TestArchiveStoreContract`` runs zarr's own ``StoreTests``. Those tests write arbitrary keys
through the store or through a backend hook and read them back; a read-only store whose keys
are synthesized from a file has neither, so each such test is overridden below with the same
check on the store's real keys (or with the check that the write is refused). Every test of
the base class runs; none is skipped.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.abc.store
from spacetransformer import Space
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator, sync
from zarr.testing.store import StoreTests

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.zarr_store import ArchiveStore, node_name, open_zarr

# Store._get_bytes/_get_json and their sync twins came with zarr 3.1.6 (the zarr_lowest nox
# session runs this module on older zarr too; these four tests are then skipped there)
_NEEDS_GET_HELPERS = pytest.mark.skipif(
    not hasattr(zarr.abc.store.Store, "_get_bytes"), reason="this zarr has no Store._get_bytes"
)

SPACE = Space(shape=(9, 13, 11), origin=(1.0, -2.0, 3.0), spacing=(2.0, 0.8, 0.7))
CHUNKS = (4, 5, 6)  # edge chunks trimmed on every axis


def _labels(seed: int, values: list[int], dtype: Any = np.uint8) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = np.zeros(SPACE.shape, dtype)
    for v in values:
        lo = [int(rng.integers(0, s - 1)) for s in SPACE.shape]
        data[lo[0] : lo[0] + 4, lo[1] : lo[1] + 6, lo[2] : lo[2] + 5] = v
    return SegmentationMask(data, {f"s{seed}_{v}": v for v in values}, SPACE)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zarr") / "case.mska"
    with MaskArchive(path, "w", space=SPACE) as arc:
        arc.add_segmask(_labels(1, [1, 2, 7]), "organs", chunks=CHUNKS)
        arc.add_segmask(_labels(2, [300, 5], np.uint16), "big/../values", chunks=CHUNKS)
        arc.add_segmask(_labels(3, [1]), "structures", chunks=(9, 13, 11))
    return path


def _file_bytes(path: Path, start: int, end: int) -> bytes:
    return path.read_bytes()[start:end]


# --- zarr's contract -----------------------------------------------------------------------


class TestArchiveStoreContract(StoreTests[ArchiveStore, cpu.Buffer]):
    store_cls = ArchiveStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, archive: Path) -> dict[str, Any]:
        return {"source": str(archive)}

    async def set(self, store: ArchiveStore, key: str, value: Buffer) -> None:
        raise NotImplementedError("keys are synthesized from the archive; none can be injected")

    async def get(self, store: ArchiveStore, key: str) -> Buffer:
        """The expected bytes, found without the store: metadata rebuilt, chunks by offset."""
        await store._load()
        document = store.layout.document(key)
        if document is not None:
            return self.buffer_cls.from_bytes(document)
        ref = store.layout.chunk(key)
        assert ref is not None
        return self.buffer_cls.from_bytes(_file_bytes(Path(store.source), ref.start, ref.end))

    def test_store_repr(self, store: ArchiveStore) -> None:
        assert repr(store) == f"ArchiveStore({store.source!r})"

    def test_store_supports_writes(self, store: ArchiveStore) -> None:
        assert not store.supports_writes

    def test_store_supports_listing(self, store: ArchiveStore) -> None:
        assert store.supports_listing

    # read-only by construction: the base tests assume a writable store
    def test_store_read_only(self, store: ArchiveStore) -> None:
        assert store.read_only
        with pytest.raises(AttributeError):
            store.read_only = False  # type: ignore[misc]

    @pytest.mark.parametrize("read_only", [True, False])
    async def test_store_open_read_only(self, open_kwargs: dict[str, Any], read_only: bool) -> None:
        if not read_only:
            with pytest.raises(medmask.ReadOnlyError, match="read-only"):
                await self.store_cls.open(**open_kwargs, read_only=False)
            return
        store = await self.store_cls.open(**open_kwargs, read_only=True)
        assert store._is_open
        assert store.read_only

    async def test_serializable_store(self, store: ArchiveStore) -> None:
        clone = pickle.loads(pickle.dumps(store))
        assert clone == store
        assert clone.read_only
        proto = default_buffer_prototype()
        for key in ("zarr.json", "organs/c/1/1/1"):
            got = await clone.get(key, prototype=proto)
            expected = await store.get(key, prototype=proto)
            assert got is not None
            assert expected is not None
            assert got.to_bytes() == expected.to_bytes()

    # reading real keys instead of keys written through the store
    @pytest.mark.parametrize("key", ["zarr.json", "organs/zarr.json", "organs/c/2/2/1"])
    @pytest.mark.parametrize(
        "byte_range",
        [None, RangeByteRequest(1, 4), OffsetByteRequest(1), SuffixByteRequest(1)],
    )
    async def test_get(self, store: ArchiveStore, key: str, byte_range: Any) -> None:
        data = (await self.get(store, key)).to_bytes()
        observed = await store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range)
        assert observed is not None
        expected = {
            None: data,
            RangeByteRequest: data[1:4],
            OffsetByteRequest: data[1:],
            SuffixByteRequest: data[-1:],
        }[None if byte_range is None else type(byte_range)]
        assert observed.to_bytes() == expected

    async def test_get_not_open(self, store_not_open: ArchiveStore) -> None:
        assert not store_not_open._is_open
        observed = await store_not_open.get("zarr.json", prototype=default_buffer_prototype())
        assert observed is not None
        assert json.loads(observed.to_bytes())["node_type"] == "group"

    async def test_get_raises(self, store: ArchiveStore) -> None:
        with pytest.raises((ValueError, TypeError), match=r"Unexpected byte_range, got.*"):
            await store.get("zarr.json", prototype=default_buffer_prototype(), byte_range=(0, 2))  # type: ignore[arg-type]

    async def test_get_many(self, store: ArchiveStore) -> None:
        keys = [k for k in await _collect_aiterator(store.list()) if k.startswith("organs/")]
        got = await _collect_aiterator(
            store._get_many((k, default_buffer_prototype(), None) for k in keys)
        )
        assert {k: b.to_bytes() for k, b in got} == {  # type: ignore[union-attr]
            k: (await self.get(store, k)).to_bytes() for k in keys
        }

    @pytest.mark.parametrize("key", ["zarr.json", "organs/c/2/2/1"])
    async def test_getsize(self, store: ArchiveStore, key: str) -> None:
        assert await store.getsize(key) == len((await self.get(store, key)).to_bytes())

    async def test_getsize_prefix(self, store: ArchiveStore) -> None:
        keys = [k for k in await _collect_aiterator(store.list()) if k.startswith("organs/c/")]
        expected = sum([await store.getsize(k) for k in keys])
        assert await store.getsize_prefix("organs/c") == expected

    async def test_get_partial_values(self, store: ArchiveStore) -> None:
        key_ranges = [
            ("zarr.json", RangeByteRequest(0, 2)),
            ("organs/c/2/2/1", SuffixByteRequest(2)),
            ("organs/zarr.json", OffsetByteRequest(2)),
            ("organs/c/1/1/1", None),
        ]
        observed = await store.get_partial_values(default_buffer_prototype(), key_ranges)
        for (key, byte_range), got in zip(key_ranges, observed, strict=True):
            expected = await store.get(key, default_buffer_prototype(), byte_range)
            assert got is not None
            assert expected is not None
            assert got.to_bytes() == expected.to_bytes()

    async def test_exists(self, store: ArchiveStore) -> None:
        assert await store.exists("zarr.json")
        assert await store.exists("organs/c/2/2/1")
        assert not await store.exists("foo")
        assert not await store.exists("organs/c/9/9/9")

    async def test_is_empty(self, store: ArchiveStore) -> None:
        assert not await store.is_empty("")
        assert not await store.is_empty("organs/")
        assert await store.is_empty("fo")
        assert await store.is_empty("spam/")

    async def test_list(self, store: ArchiveStore) -> None:
        keys = await _collect_aiterator(store.list())
        assert "zarr.json" in keys
        assert "organs/zarr.json" in keys
        assert "structures/zarr.json" in keys
        assert len(keys) == len(set(keys))

    async def test_list_prefix(self, store: ArchiveStore) -> None:
        every = await _collect_aiterator(store.list())
        for prefix in ("", "organs/", "structures/", "organs/c/1/"):
            observed = sorted(await _collect_aiterator(store.list_prefix(prefix)))
            assert observed == sorted(k for k in every if k.startswith(prefix))

    async def test_list_empty_path(self, store: ArchiveStore) -> None:
        assert sorted(await _collect_aiterator(store.list_prefix(""))) == sorted(
            await _collect_aiterator(store.list())
        )

    async def test_list_dir(self, store: ArchiveStore) -> None:
        top = sorted(await _collect_aiterator(store.list_dir("")))
        assert top == sorted(["zarr.json", "organs", node_name("big/../values"), "%73tructures",
                              "structures"])  # fmt: skip
        assert sorted(await _collect_aiterator(store.list_dir("organs"))) == ["c", "zarr.json"]
        assert sorted(await _collect_aiterator(store.list_dir("organs/"))) == ["c", "zarr.json"]
        assert await _collect_aiterator(store.list_dir("nothing")) == ()

    @_NEEDS_GET_HELPERS
    async def test_get_bytes(self, store: ArchiveStore) -> None:
        data = await store._get_bytes("zarr.json", prototype=default_buffer_prototype())
        assert json.loads(data)["zarr_format"] == 3
        with pytest.raises(FileNotFoundError):
            await store._get_bytes("nonexistent_key", prototype=default_buffer_prototype())

    @_NEEDS_GET_HELPERS
    def test_get_bytes_sync(self, store: ArchiveStore) -> None:
        data = store._get_bytes_sync("zarr.json", prototype=default_buffer_prototype())
        assert json.loads(data)["node_type"] == "group"

    @_NEEDS_GET_HELPERS
    async def test_get_json(self, store: ArchiveStore) -> None:
        got = await store._get_json("organs/zarr.json", prototype=default_buffer_prototype())
        assert got["node_type"] == "array"

    @_NEEDS_GET_HELPERS
    def test_get_json_sync(self, store: ArchiveStore) -> None:
        got = store._get_json_sync("organs/zarr.json", prototype=default_buffer_prototype())
        assert got["dimension_names"] == ["z", "y", "x"]

    def test_get_sync(self, store: ArchiveStore) -> None:
        got = store.get_sync("organs/zarr.json")
        assert got is not None
        assert got.to_bytes() == sync(self.get(store, "organs/zarr.json")).to_bytes()

    # writes: every one is refused
    WRITE = "store was opened in read-only mode and does not support writing"

    @pytest.mark.parametrize("key", ["zarr.json", "c/0", "foo/c/0.0"])
    async def test_set(self, store: ArchiveStore, key: str) -> None:
        with pytest.raises(ValueError, match=self.WRITE):
            await store.set(key, self.buffer_cls.from_bytes(b"\x01"))

    async def test_set_not_open(self, store_not_open: ArchiveStore) -> None:
        with pytest.raises(ValueError, match=self.WRITE):
            await store_not_open.set("c/0", self.buffer_cls.from_bytes(b"\x01"))

    async def test_set_many(self, store: ArchiveStore) -> None:
        with pytest.raises(ValueError, match=self.WRITE):
            await store._set_many([("zarr.json", self.buffer_cls.from_bytes(b"{}"))])

    async def test_set_if_not_exists(self, store: ArchiveStore) -> None:
        assert await store.exists("zarr.json")
        await store.set_if_not_exists("zarr.json", self.buffer_cls.from_bytes(b"{}"))  # no-op
        with pytest.raises(ValueError, match=self.WRITE):
            await store.set_if_not_exists("new", self.buffer_cls.from_bytes(b"1"))

    async def test_delete(self, store: ArchiveStore) -> None:
        assert not store.supports_deletes
        with pytest.raises(ValueError, match=self.WRITE):
            await store.delete("zarr.json")

    async def test_delete_dir(self, store: ArchiveStore) -> None:
        with pytest.raises(NotImplementedError):
            await store.delete_dir("organs")

    async def test_delete_nonexistent_key_does_not_raise(self, store: ArchiveStore) -> None:
        with pytest.raises(ValueError, match=self.WRITE):  # read-only: refused, not ignored
            await store.delete("nonexistent_key")

    async def test_clear(self, store: ArchiveStore) -> None:
        with pytest.raises(NotImplementedError):
            await store.clear()
        assert await store.exists("zarr.json")

    # zarr's sync-write protocols (zarr >= 3.1.6; older versions have no such tests)
    def test_set_sync(self, store: ArchiveStore) -> None:
        protocol = getattr(zarr.abc.store, "SupportsSetSync", None)
        assert protocol is None or not isinstance(store, protocol)

    def test_delete_sync(self, store: ArchiveStore) -> None:
        protocol = getattr(zarr.abc.store, "SupportsDeleteSync", None)
        assert protocol is None or not isinstance(store, protocol)

    def test_delete_sync_missing(self, store: ArchiveStore) -> None:
        self.test_delete_sync(store)


# --- what zarr sees ------------------------------------------------------------------------


def test_members_and_structures_equal_the_archive(archive: Path) -> None:
    group = open_zarr(archive)
    attrs = group.attrs["medmask"]
    assert attrs["container"] == "mska"
    assert attrs["members"] == {
        "organs": "organs",
        node_name("big/../values"): "big/../values",
        "%73tructures": "structures",
    }
    with MaskArchive(archive) as arc:
        for node, member in attrs["members"].items():
            array = group[node]
            expected = arc.load_segmask(member)
            assert array.shape == expected.shape
            assert array.dtype == expected.dtype
            assert array.chunks == arc[member].chunks
            np.testing.assert_array_equal(array[...], expected.data)
            np.testing.assert_array_equal(array[3:8, 2:12, 4:10], expected.data[3:8, 2:12, 4:10])
            assert dict(array.attrs["labels"]) == expected.mapping.to_dict()
            assert array.metadata.dimension_names == ("z", "y", "x")
        names = group["structures"].attrs["structures"]
        assert set(names) == {"s1_1", "s1_2", "s1_7", "s2_300", "s2_5", "s3_1"}
        for name, where in names.items():
            array = group[f"structures/{where['node']}"]
            assert array.dtype == np.bool_
            np.testing.assert_array_equal(array[...], arc.get_binary_mask_by_names(name))


def test_space_attribute_is_lps_and_consistent(archive: Path) -> None:
    space = open_zarr(archive)["organs"].attrs["space"]
    assert space["coordinate_system"] == "LPS"
    assert space["axes"] == "zyx"
    affine = np.asarray(space["affine"])
    voxel = np.array([3, 4, 5, 1.0])
    world = np.asarray(SPACE.origin) + 3 * 2.0 * np.asarray(SPACE.x_orientation)
    world = (
        world
        + 4 * 0.8 * np.asarray(SPACE.y_orientation)
        + 5 * 0.7 * np.asarray(SPACE.z_orientation)
    )
    np.testing.assert_allclose((affine @ voxel)[:3], world)


def test_msk_opens_as_a_group_with_one_array(tmp_path: Path) -> None:
    mask = _labels(4, [1, 9])
    medmask.save_mask(mask, tmp_path / "one.msk", chunks=CHUNKS)
    group = open_zarr(tmp_path / "one.msk")
    assert group.attrs["medmask"]["container"] == "msk"
    np.testing.assert_array_equal(group["mask"][...], mask.data)
    np.testing.assert_array_equal(group["structures/s4_9"][...], mask.data == 9)
    assert medmask.from_zarr(group["mask"]) == mask


def test_dask_and_xarray_read_through_the_store(archive: Path) -> None:
    import dask.array as da
    import xarray as xr

    group = open_zarr(archive)
    lazy = da.from_zarr(group["organs"])
    with MaskArchive(archive) as arc:
        expected = arc.load_segmask("organs").data
    assert int(lazy.sum().compute()) == int(expected.sum())
    ds = xr.open_zarr(ArchiveStore(str(archive)), consolidated=True, zarr_format=3)
    np.testing.assert_array_equal(ds["organs"].values, expected)
    assert ds["organs"].dims == ("z", "y", "x")


def test_pickled_store_reads_in_a_dask_worker_process(archive: Path) -> None:
    import dask
    import dask.array as da

    lazy = da.from_zarr(open_zarr(archive)["organs"])
    with dask.config.set(scheduler="processes", num_workers=2):
        total = int(lazy.sum().compute())
    with MaskArchive(archive) as arc:
        assert total == int(arc.load_segmask("organs").data.sum())


def test_local_file_changed_after_opening_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "grow.mska"
    with MaskArchive(path, "w", space=SPACE) as arc:
        arc.add_segmask(_labels(1, [1, 2]), "a", chunks=CHUNKS)
    group = open_zarr(path)
    first = group["a"][...]
    with MaskArchive(path, "a") as arc:  # appended to: the store is pinned to generation 1
        arc.add_segmask(_labels(2, [3]), "b")
    with pytest.raises(medmask.ConcurrentModificationError, match=r"grow\.mska.*changed"):
        group["a"][...]
    np.testing.assert_array_equal(open_zarr(path)["a"][...], first)


def test_array_protocol_of_maskfile_and_members(archive: Path, tmp_path: Path) -> None:
    import dask.array as da

    mask = _labels(5, [1, 2, 3])
    medmask.save_mask(mask, tmp_path / "m.msk", chunks=CHUNKS)
    with medmask.MaskFile(tmp_path / "m.msk") as f:
        assert (f.shape, f.dtype, f.ndim, f.chunks) == (mask.shape, mask.dtype, 3, CHUNKS)
        for key in [(2, slice(1, 9, 3), slice(None, None, -2)), (Ellipsis, 4), slice(-3, None)]:
            np.testing.assert_array_equal(f[key], mask.data[key])
        np.testing.assert_array_equal(f[0:0], mask.data[0:0])
        np.testing.assert_array_equal(np.asarray(f), mask.data)
        lazy = da.from_array(f, chunks=f.chunks)
        assert int(lazy.sum().compute(scheduler="threads")) == int(mask.data.sum())
        with pytest.raises(medmask.InvalidTypeError, match="basic indexing"):
            f[[1, 2]]
    with MaskArchive(archive) as arc:
        member = arc["organs"]
        expected = arc.load_segmask("organs").data
        np.testing.assert_array_equal(member[1:3, ::2], expected[1:3, ::2])
        np.testing.assert_array_equal(
            da.from_array(member, chunks=member.chunks).compute(), expected
        )
        with pytest.raises(medmask.MemberNotFoundError):
            arc["nope"]
    np.testing.assert_array_equal(np.asarray(mask), mask.data)
    assert np.asarray(mask).dtype == mask.dtype


@pytest.mark.parametrize("shards", [None, (8, 10, 12)])
def test_to_zarr_and_back(tmp_path: Path, shards: Any) -> None:
    mask = _labels(6, [1, 300, 40], np.uint16)
    array = medmask.to_zarr(mask, tmp_path / "native.zarr", chunks=CHUNKS, shards=shards)
    assert array.metadata.dimension_names == ("z", "y", "x")
    again = medmask.from_zarr(str(tmp_path / "native.zarr"))
    assert again == mask
    assert again.bit_depth == 16
    binary = SegmentationMask(mask.data == 300, {"lesion": 1}, SPACE)
    store = zarr.storage.MemoryStore()
    medmask.to_zarr(binary, store)
    assert medmask.from_zarr(zarr.open_array(store, mode="r")) == binary
    with pytest.raises(medmask.InvalidValueError, match="'labels' and 'space'"):
        medmask.from_zarr(
            zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 2, 2), dtype="u1")
        )


def test_open_zarr_does_not_import_zarr_into_medmask() -> None:
    import subprocess
    import sys

    code = "import sys, medmask; print('zarr' in sys.modules, 'dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- exact behaviour: node names, documents, keys, errors ----------------------------------------
# Everything below pins what docs/zarr.md specifies byte for byte: a reader that does not use
# medmask depends on these names, documents and key sets.

OBLIQUE = Space(
    shape=(6, 8, 8),
    origin=(1.5, -2.0, 3.25),
    spacing=(2.0, 0.5, 0.75),
    x_orientation=(0.0, 1.0, 0.0),
    y_orientation=(-1.0, 0.0, 0.0),
    z_orientation=(0.0, 0.0, 1.0),
)
OBLIQUE_DOC = {  # space_attributes(OBLIQUE), by hand: affine[:3, :3] = directions.T * spacing
    "coordinate_system": "LPS",
    "axes": "zyx",
    "shape": [6, 8, 8],
    "origin": [1.5, -2.0, 3.25],
    "spacing": [2.0, 0.5, 0.75],
    "directions": [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    "affine": [
        [0.0, -0.5, 0.0, 1.5],
        [2.0, 0.0, 0.0, -2.0],
        [0.0, 0.0, 0.75, 3.25],
        [0.0, 0.0, 0.0, 1.0],
    ],
}
EDGES = {"name": "medmask.edges", "configuration": {"level": 9}}


def _layers() -> np.ndarray:
    """Label 1 in chunk z 0 only, 2 in chunk z 1 only, 3 in chunk z 2 only (chunks of 2)."""
    data = np.zeros(OBLIQUE.shape, np.uint8)
    data[0:2, 1:3, 2:5] = 1
    data[2:4, 3:6, 0:2] = 2
    data[4:6, 7, 7] = 3
    return data


def _big() -> np.ndarray:
    data = np.zeros(OBLIQUE.shape, np.uint16)
    data[0:2, 0:2, 0:2] = 300
    data[3, 3, 3:6] = 5
    data[5, 7, 7] = 7
    return data


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``BOX`` (uint8, chunks (2, 8, 8): grid (3, 1, 1)), ``é/..`` (bool, shares the name
    ``low`` with BOX: ambiguous, no structure) and ``__big`` (uint16, awkward label names)."""
    path = tmp_path_factory.mktemp("exact") / "exact.mska"
    layers = _layers()
    mapping = {"bg": 0, "low": 1, "c": 2, "high": 3, "gone": 9}
    with MaskArchive(path, "w", space=OBLIQUE) as arc:
        arc.add_segmask(SegmentationMask(layers, mapping, OBLIQUE), "BOX", chunks=(2, 8, 8))
        accented = SegmentationMask(layers == 1, {"low": 1}, OBLIQUE)
        arc.add_segmask(accented, "é/..", chunks=(6, 8, 8))
        big = SegmentationMask(_big(), {"v300": 300, "r kidney": 5, ".": 7}, OBLIQUE)
        arc.add_segmask(big, "__big", chunks=(6, 8, 8))
    return path


def _canonical(doc: Any) -> str:
    """JSON text with sorted keys: tells ``false`` from ``0`` (equal in Python)."""
    return json.dumps(doc, sort_keys=True)


def _array_doc(
    dtype: str, chunks: list[int], fill: Any, codecs: list[Any], attributes: dict[str, Any]
) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [6, 8, 8],
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": ["z", "y", "x"],
        "storage_transformers": [],
    }


def _structure_doc(
    name: str, member: str, value: int, source: str, chunks: list[int], stats: dict[str, Any]
) -> dict[str, Any]:
    select = {"name": "medmask.select_label", "configuration": {"value": value, "source": source}}
    attributes = {
        "labels": {name: 1},
        "label_stats": {name: stats},
        "space": OBLIQUE_DOC,
        "medmask": {"structure": name, "member": member, "value": value},
    }
    return _array_doc("bool", chunks, False, [select, EDGES], attributes)


def _array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    array = group[path]
    assert isinstance(array, zarr.Array), path
    return array


def _doc(store: ArchiveStore, key: str) -> Any:
    got = store.get_sync(key)
    assert got is not None, key
    return json.loads(got.to_bytes())


@pytest.mark.parametrize(
    ("name", "reserved", "expected"),
    [
        ("liver", (), "liver"),
        ("A-z_0.9", (), "A-z_0.9"),
        ("a b/c", (), "a%20b%2Fc"),
        ("%", (), "%25"),
        ("é", (), "%C3%A9"),
        ("肝臓", (), "%E8%82%9D%E8%87%93"),
        (".", (), "%2E"),
        ("..", (), "%2E."),
        ("...", (), "..."),
        (".x", (), ".x"),
        ("__", (), "%5F_"),
        ("__x", (), "%5F_x"),
        ("_x", (), "_x"),
        ("x__", (), "x__"),
        ("", (), "%00"),
        ("structures", (), "structures"),
        ("structures", ("structures",), "%73tructures"),
        ("a", ("b", "a"), "%61"),
        ("é", ("%C3%A9",), "%25C3%A9"),
        ("a b", ("a b",), "a%20b"),  # reserved are node names: "a b" is none
    ],
)
def test_node_name_exact(name: str, reserved: tuple[str, ...], expected: str) -> None:
    assert node_name(name, reserved=reserved) == expected


def test_space_attributes_round_trip_an_oblique_space() -> None:
    from medmask.zarr_store import space_attributes, space_from_attributes

    assert space_attributes(OBLIQUE) == OBLIQUE_DOC
    a, b = np.cos(0.3), np.sin(0.3)  # rotated about two axes: every direction oblique
    r = np.array([[a, -b, 0.0], [b, a, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, b, -a], [0.0, a, b]]
    )
    space = Space(
        shape=(3, 4, 5),
        origin=(1.0, 2.0, 3.0),
        spacing=(0.5, 0.7, 2.5),
        x_orientation=tuple(r[:, 0]),
        y_orientation=tuple(r[:, 1]),
        z_orientation=tuple(r[:, 2]),
    )
    back = space_from_attributes(space_attributes(space), (3, 4, 5))
    assert back.shape == (3, 4, 5)
    for got, want in [
        (back.origin, space.origin),
        (back.spacing, space.spacing),
        (back.x_orientation, space.x_orientation),
        (back.y_orientation, space.y_orientation),
        (back.z_orientation, space.z_orientation),
    ]:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # "coordinate_system" and "axes" default to LPS and zyx; "shape" comes from the array
    bare = {k: OBLIQUE_DOC[k] for k in ("origin", "spacing", "directions")}
    assert space_from_attributes(bare, (6, 8, 8)) == OBLIQUE
    assert space_from_attributes({**OBLIQUE_DOC, "shape": [1, 1, 1]}, (6, 8, 8)) == OBLIQUE


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "Expected an LPS 'space' attribute. Got [1, 2]."),
        (None, "Expected an LPS 'space' attribute. Got None."),
        ({**OBLIQUE_DOC, "coordinate_system": "RAS"}, "Expected an LPS 'space' attribute. Got {"),
        ({**OBLIQUE_DOC, "coordinate_system": None}, "Expected an LPS 'space' attribute. Got {"),
        ({**OBLIQUE_DOC, "axes": "xyz"}, "Expected space axes 'zyx'. Got 'xyz'."),
        ({**OBLIQUE_DOC, "axes": None}, "Expected space axes 'zyx'. Got None."),
        ({"origin": [0, 0, 0]}, "Invalid 'space' attribute {'origin': [0, 0, 0]}: 'directions'"),
        (
            {"origin": [0, 0, 0], "spacing": [1, 1, 1], "directions": [[1, 0, 0]]},
            "Invalid 'space' attribute {'origin': [0, 0, 0], 'spacing': [1, 1, 1], "
            "'directions': [[1, 0, 0]]}: list index out of range",
        ),
        (
            {"origin": "abc", "spacing": [1, 1, 1], "directions": [[1, 0, 0]] * 3},
            "Invalid 'space' attribute {'origin': 'abc', ",
        ),
    ],
)
def test_space_from_attributes_refuses_with_the_problem(obj: Any, message: str) -> None:
    from medmask.zarr_store import space_from_attributes

    with pytest.raises(medmask.FormatError) as info:
        space_from_attributes(obj, (6, 8, 8))
    assert str(info.value).startswith(message)
    if message.endswith("Got {"):
        assert str(info.value) == f"{message[:-1]}{obj!r:.200}."


def test_every_document_is_exact(exact: Path) -> None:
    store = ArchiveStore(exact)
    low = {"count": 12, "bbox": [[0, 1], [1, 2], [2, 4]]}
    c = {"count": 12, "bbox": [[2, 3], [3, 5], [0, 1]]}
    high = {"count": 2, "bbox": [[4, 5], [7, 7], [7, 7]]}
    gone = {"count": 0, "bbox": None}
    box = _array_doc(
        "uint8",
        [2, 8, 8],
        0,
        [EDGES],
        {
            "labels": {"bg": 0, "low": 1, "c": 2, "high": 3, "gone": 9},
            "label_stats": {
                "bg": {"count": 6 * 8 * 8 - 26, "bbox": None},
                "low": low,
                "c": c,
                "high": high,
                "gone": gone,
            },
            "space": OBLIQUE_DOC,
            "medmask": {
                "member": "BOX",
                "layer": False,
                "codec": {"id": "medmask.edges", "level": 9},
            },
        },
    )
    accented = _array_doc(
        "bool",
        [6, 8, 8],
        False,
        [EDGES],
        {
            "labels": {"low": 1},
            "label_stats": {"low": low},
            "space": OBLIQUE_DOC,
            "medmask": {
                "member": "é/..",
                "layer": False,
                "codec": {"id": "medmask.edges", "level": 9},
            },
        },
    )
    v300 = {"count": 8, "bbox": [[0, 1], [0, 1], [0, 1]]}
    kidney = {"count": 3, "bbox": [[3, 3], [3, 3], [3, 5]]}
    dot = {"count": 1, "bbox": [[5, 5], [7, 7], [7, 7]]}
    big = _array_doc(
        "uint16",
        [6, 8, 8],
        0,
        [EDGES],
        {
            "labels": {"v300": 300, "r kidney": 5, ".": 7},
            "label_stats": {"v300": v300, "r kidney": kidney, ".": dot},
            "space": OBLIQUE_DOC,
            "medmask": {
                "member": "__big",
                "layer": False,
                "codec": {"id": "medmask.edges", "level": 9},
            },
        },
    )
    expected: dict[str, Any] = {
        "BOX": box,
        "%C3%A9%2F..": accented,
        "%5F_big": big,
        "structures/c": _structure_doc("c", "BOX", 2, "uint8", [2, 8, 8], c),
        "structures/high": _structure_doc("high", "BOX", 3, "uint8", [2, 8, 8], high),
        "structures/gone": _structure_doc("gone", "BOX", 9, "uint8", [2, 8, 8], gone),
        "structures/v300": _structure_doc("v300", "__big", 300, "uint16", [6, 8, 8], v300),
        "structures/r%20kidney": _structure_doc(
            "r kidney", "__big", 5, "uint16", [6, 8, 8], kidney
        ),
        "structures/%2E": _structure_doc(".", "__big", 7, "uint16", [6, 8, 8], dot),
        "structures": {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "structures": {
                    "c": {"node": "c", "member": "BOX", "value": 2},
                    "high": {"node": "high", "member": "BOX", "value": 3},
                    "gone": {"node": "gone", "member": "BOX", "value": 9},
                    "v300": {"node": "v300", "member": "%5F_big", "value": 300},
                    "r kidney": {"node": "r%20kidney", "member": "%5F_big", "value": 5},
                    ".": {"node": "%2E", "member": "%5F_big", "value": 7},
                },
                "names": {
                    "c": "c",
                    "high": "high",
                    "gone": "gone",
                    "v300": "v300",
                    "r%20kidney": "r kidney",
                    "%2E": ".",
                },
            },
        },
    }
    for path, doc in expected.items():
        assert _canonical(_doc(store, f"{path}/zarr.json")) == _canonical(doc), path
    root = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "medmask": {
                "layout_version": "1.0",
                "container": "mska",
                "format_version": "1.0",
                "generation": 1,
                "members": {"BOX": "BOX", "%C3%A9%2F..": "é/..", "%5F_big": "__big"},
                "created_by": f"medmask {medmask.__version__}",
            },
            "space": OBLIQUE_DOC,
        },
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": expected},
    }
    assert _canonical(_doc(store, "zarr.json")) == _canonical(root)
    # the documents are what zarr itself reads
    group = open_zarr(exact)
    assert _array(group, "structures/r%20kidney").attrs["medmask"] == {
        "structure": "r kidney",
        "member": "__big",
        "value": 5,
    }
    np.testing.assert_array_equal(_array(group, "%5F_big")[...], _big())
    np.testing.assert_array_equal(_array(group, "structures/%2E")[...], _big() == 7)


def test_documents_are_compact_utf8_json(exact: Path) -> None:
    store = ArchiveStore(exact)
    for key in ("zarr.json", "%C3%A9%2F../zarr.json", "structures/zarr.json"):
        got = store.get_sync(key)
        assert got is not None
        raw = got.to_bytes()
        compact = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"))
        assert raw == compact.encode("utf-8"), key
        assert sync(store.getsize(key)) == len(raw)
    root = store.get_sync("zarr.json")
    assert root is not None
    assert '"é/.."'.encode() in root.to_bytes()  # not "\u00e9"


EXACT_KEYS = [
    "%5F_big/c/0/0/0",
    "%5F_big/zarr.json",
    "%C3%A9%2F../c/0/0/0",
    "%C3%A9%2F../zarr.json",
    "BOX/c/0/0/0",
    "BOX/c/1/0/0",
    "BOX/c/2/0/0",
    "BOX/zarr.json",
    # a structure has the chunk keys of the stored chunks that meet its bbox, no others: c
    # (z 2-3) has chunk 1 only, not chunk 0 (z 0-1, ends where c starts) nor 2 (z 4-5)
    "structures/%2E/c/0/0/0",
    "structures/%2E/zarr.json",
    "structures/c/c/1/0/0",
    "structures/c/zarr.json",
    "structures/gone/zarr.json",
    "structures/high/c/2/0/0",
    "structures/high/zarr.json",
    "structures/r%20kidney/c/0/0/0",
    "structures/r%20kidney/zarr.json",
    "structures/v300/c/0/0/0",
    "structures/v300/zarr.json",
    "structures/zarr.json",
    "zarr.json",
]


async def test_the_keys_are_exact(exact: Path) -> None:
    store = ArchiveStore(exact)
    assert await _collect_aiterator(store.list()) == tuple(EXACT_KEYS)
    assert await _collect_aiterator(store.list_prefix("structures/c/")) == (
        "structures/c/c/1/0/0",
        "structures/c/zarr.json",
    )
    for key in EXACT_KEYS:
        assert await store.exists(key), key
        got = await store.get(key, default_buffer_prototype())
        assert got is not None, key
        assert await store.getsize(key) == len(got.to_bytes()), key
    for prefix, children in [
        ("", ["%5F_big", "%C3%A9%2F..", "BOX", "structures", "zarr.json"]),
        ("BOX", ["c", "zarr.json"]),
        ("BOX/", ["c", "zarr.json"]),
        ("BOX/c", ["0", "1", "2"]),
        ("BOX/c/1/", ["0"]),
        ("structures", ["%2E", "c", "gone", "high", "r%20kidney", "v300", "zarr.json"]),
        ("structures/c", ["c", "zarr.json"]),
        ("structures/c/c", ["1"]),
        ("structures/gone", ["zarr.json"]),
        ("BO", []),
    ]:
        got_children = await _collect_aiterator(store.list_dir(prefix))
        assert sorted(got_children) == children, prefix
        assert len(got_children) == len(set(got_children)), prefix
    # structure chunks are the member's chunks, byte for byte
    for structure, member in [("structures/c/c/1/0/0", "BOX/c/1/0/0"),
                              ("structures/high/c/2/0/0", "BOX/c/2/0/0")]:  # fmt: skip
        a = await store.get(structure, default_buffer_prototype())
        b = await store.get(member, default_buffer_prototype())
        assert a is not None
        assert b is not None
        assert a.to_bytes() == b.to_bytes()
    np.testing.assert_array_equal(_array(open_zarr(exact), "structures/c")[...], _layers() == 2)


@pytest.mark.parametrize(
    "key",
    [
        "BOX/c/3/0/0",  # beyond the grid (3, 1, 1) on each axis
        "BOX/c/0/1/0",
        "BOX/c/0/0/1",
        "BOX/c/9/0/0",
        "BOX/c/0/9/9",
        "BOX/c/5/7/0",
        "BOX/c/1/0",  # not three indices
        "BOX/c/1/0/0/0",
        "BOX/c/1/0/0/",
        "BOX/c/a/b/c",
        "BOX/c/-1/0/0",
        "BOX/c//0/0",
        "BOX/c/01/0/0",  # not as zarr writes chunk 1: no alias of a stored key
        "BOX/c/1.0/0/0",
        "BOX/c/\u0661/0/0",  # ARABIC-INDIC DIGIT ONE
        "BOX/c/\u00b2/0/0",  # SUPERSCRIPT TWO: isdigit(), but int() refuses it
        "BOX/c",
        "BOX/c/",
        "BOX",
        "BOX/",
        "BOX/zarr.jso",
        "BOX//zarr.json",
        "BOX/zarr.json/",
        "box/zarr.json",
        "nothing/c/0/0/0",
        "nothing/zarr.json",
        "c/0/0/0",
        "/zarr.json",
        "zarr.json/c/0/0/0",
        "structures/c/c/0/0/0",  # outside c's bbox (chunk 0 is stored, for BOX)
        "structures/c/c/2/0/0",
        "structures/gone/c/0/0/0",  # an empty structure: no chunk at all
        "structures/low/zarr.json",  # ambiguous: in two members
        "structures/%C3%A9/zarr.json",
        "structures/c/c/1/0/0/zarr.json",
        ".zgroup",
        "",
    ],
)
async def test_keys_that_are_not_in_the_store(exact: Path, key: str) -> None:
    store = ArchiveStore(exact)
    assert await store.get(key, default_buffer_prototype()) is None
    assert not await store.exists(key)
    assert key not in await _collect_aiterator(store.list())
    with pytest.raises(FileNotFoundError) as info:
        await store.getsize(key)
    assert info.value.args == (key,)


@pytest.mark.parametrize("key", ["zarr.json", "BOX/c/1/0/0"])
def test_byte_ranges_are_exact(exact: Path, key: str) -> None:
    store = ArchiveStore(exact)
    whole = store.get_sync(key)
    assert whole is not None
    data = whole.to_bytes()
    assert len(data) > 20
    for byte_range, expected in [
        (None, data),
        (RangeByteRequest(3, 11), data[3:11]),
        (RangeByteRequest(0, len(data) + 50), data),
        (RangeByteRequest(5, 5), b""),
        (OffsetByteRequest(7), data[7:]),
        (OffsetByteRequest(len(data)), b""),
        (SuffixByteRequest(9), data[-9:]),
        (SuffixByteRequest(len(data) + 50), data),
        (SuffixByteRequest(0), b""),  # the last 0 bytes, not data[-0:]
    ]:
        got = store.get_sync(key, byte_range=byte_range)
        assert got is not None
        assert got.to_bytes() == expected, byte_range
        got = store.get_sync(key, prototype=default_buffer_prototype(), byte_range=byte_range)
        assert got is not None
        assert got.to_bytes() == expected, byte_range
    with pytest.raises(TypeError, match=r"^Unexpected byte_range, got \(0, 2\)\.$"):
        store.get_sync(key, byte_range=(0, 2))  # type: ignore[arg-type]


def test_store_equality_and_hash(exact: Path, archive: Path) -> None:
    a = ArchiveStore(exact)
    assert a == ArchiveStore(str(exact))
    assert hash(a) == hash(ArchiveStore(str(exact)))
    assert a != ArchiveStore(archive)  # another file, the same (no) options
    assert a != ArchiveStore(exact, storage_options={"anon": True})
    assert ArchiveStore(exact, storage_options={"anon": True}) == ArchiveStore(
        exact, storage_options={"anon": True}
    )
    assert a != str(exact)
    assert a != object()
    assert (a == object()) is False


def test_store_arguments(exact: Path) -> None:
    with pytest.raises(medmask.ReadOnlyError) as info:
        ArchiveStore(exact, read_only=False)
    assert str(info.value) == f"{exact}: ArchiveStore is read-only."
    for bad, kind in [(3, "int"), (b"x.mska", "bytes"), (None, "NoneType")]:
        with pytest.raises(medmask.InvalidTypeError) as type_info:
            ArchiveStore(bad)  # type: ignore[arg-type]
        assert str(type_info.value) == f"Expected a path or URL. Got {kind}."
    options: dict[str, Any] = {"anon": True}
    store = ArchiveStore(exact, storage_options=options)
    options["key"] = "changed"  # the store keeps its own copy
    assert store.storage_options == {"anon": True}
    assert ArchiveStore(exact).storage_options == {}
    assert store.source == str(exact)
    assert store.read_only
    assert repr(store) == f"ArchiveStore({str(exact)!r})"


def _small_msk(path: Path) -> Path:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 2:5] = 1
    data[3, 4, 5] = 2
    medmask.save_mask(SegmentationMask(data, {"a": 1, "b": 2}, Space(shape=data.shape)), path)
    return path


def test_limits_refuse_the_open(tmp_path: Path) -> None:
    path = _small_msk(tmp_path / "t.msk")
    voxels = (
        f"{path}: declares (4, 5, 6) = 120 voxels, above the limit of 119 (raise it with "
        "max_voxels= or MEDMASK_MAX_VOXELS if this is intended)."
    )
    size = (
        f"{path}: declares (4, 5, 6) uint8 = 120 bytes, above the limit of 119 bytes (raise it "
        "with max_bytes= or MEDMASK_MAX_BYTES if this is intended)."
    )
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: open_zarr(path, max_voxels=119), voxels),
        (lambda: open_zarr(path, max_bytes=119), size),
        (lambda: ArchiveStore(path, max_voxels=119).directory, voxels),
        (lambda: ArchiveStore(path, max_bytes=119).layout, size),
    ]
    for opened, message in cases:
        with pytest.raises(medmask.AllocationLimitError) as info:
            opened()
        assert str(info.value) == message
    group = open_zarr(path, max_voxels=120, max_bytes=120)
    assert np.asarray(_array(group, "mask")[...]).sum() == 1 * 18 + 2


def test_a_member_whose_chunks_lie_past_the_end_fails_the_open(tmp_path: Path) -> None:
    path = tmp_path / "cut.msk"
    path.write_bytes(_small_msk(tmp_path / "t.msk").read_bytes()[:-3])
    with pytest.raises(medmask.FormatError) as info:
        open_zarr(path)
    assert str(info.value) == f"{path}: a chunk index entry points past the end of the file."


def test_a_member_whose_index_points_into_the_header_fails_the_open(tmp_path: Path) -> None:
    from medmask.format.encoding import EncodedMask, encode_mask
    from medmask.format.msk import build_msk

    class IntoHeader(EncodedMask):
        def index(self, first_offset: int) -> Any:
            return super().index(16)  # the streams stay where they are; the index lies

    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 2:5] = 1
    encoded = encode_mask(SegmentationMask(data, {"a": 1}, Space(shape=data.shape)))
    path = tmp_path / "into.msk"
    path.write_bytes(b"".join(build_msk(IntoHeader(encoded.descriptor, encoded.streams))))
    with pytest.raises(medmask.FormatError) as info:
        open_zarr(path)
    assert str(info.value) == f"{path}: a chunk index entry points into the header or metadata."


def test_structure_checks_name_the_file_and_member(tmp_path: Path) -> None:
    import dataclasses

    from damaged_archives import commit_directory, crc_mismatch, sound

    bad = tmp_path / "crc.mska"
    crc_mismatch(bad)
    problem = (
        f"{bad} [m1]: chunk 0 checksum mismatch; the file is corrupted (or was replaced "
        "since it was opened)."
    )
    for node in ("structures/a1", "m1"):  # the structure's check, then the member's
        with pytest.raises(medmask.ChecksumError) as info:
            _array(open_zarr(bad), node)[...]
        assert str(info.value) == problem

    lying = tmp_path / "lying.mska"
    sound(lying)

    def lie(directory: Any) -> Any:
        first, second = directory.members
        labels = tuple(
            dataclasses.replace(e, bbox=((5, 5), (19, 19), (23, 23)), count=1)
            if e.name == "a1"
            else e
            for e in first.descriptor.labels
        )
        descriptor = dataclasses.replace(first.descriptor, labels=labels)
        return dataclasses.replace(
            directory, members=(dataclasses.replace(first, descriptor=descriptor), second)
        )

    commit_directory(lying, lie)
    group = open_zarr(lying)
    with pytest.raises(medmask.FormatError) as fmt_info:
        _array(group, "structures/a1")[...]
    assert str(fmt_info.value) == (
        f"{lying} [m1]: label 'a1' (value 1): expected the 1 voxels its metadata lists inside "
        "its stored bbox ((5, 5), (19, 19), (23, 23)). Got 0; the label statistics are wrong "
        "(the file is corrupted or was written by a faulty writer)."
    )


def _changed(path: Path, how: str) -> None:
    """Change ``path`` so that one field of its ``os.stat`` differs (the bytes may not)."""
    st = os.stat(path)
    if how == "mtime":  # the same bytes rewritten in place, a second later
        path.write_bytes(path.read_bytes())
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif how == "size":  # appended to, the modification time put back
        with path.open("ab") as f:
            f.write(b"\0" * 8)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:  # replaced by an identical copy: another inode, the same size and time
        copy = path.with_suffix(".copy")
        shutil.copy2(path, copy)
        os.replace(copy, path)
    new = os.stat(path)
    changed = {
        "mtime": new.st_mtime_ns != st.st_mtime_ns,
        "size": new.st_size != st.st_size,
        "inode": new.st_ino != st.st_ino,
    }
    assert changed == {k: k == how for k in changed}


@pytest.mark.parametrize("how", ["mtime", "size", "inode"])
@pytest.mark.parametrize("url", [False, True])
def test_a_local_file_is_pinned_by_its_stat(tmp_path: Path, how: str, url: bool) -> None:
    path = tmp_path / "pinned.mska"
    with MaskArchive(path, "w", space=SPACE) as arc:
        arc.add_segmask(_labels(1, [1, 2]), "a", chunks=CHUNKS)
    source = path.as_uri() if url else str(path)
    group = open_zarr(source)
    expected = _array(group, "a")[...]
    np.testing.assert_array_equal(_array(group, "a")[...], expected)  # unchanged: reads again
    _changed(path, how)
    with pytest.raises(medmask.ConcurrentModificationError) as info:
        _array(group, "a")[...]
    assert str(info.value) == (
        f"{source}: the file changed since the store opened it (generation 1); open it again "
        "to see the new state."
    )
    np.testing.assert_array_equal(_array(open_zarr(source), "a")[...], expected)


def test_a_memory_url_is_read_without_stat(memory_fs: Any, exact: Path) -> None:
    memory_fs.pipe("/z/exact.mska", exact.read_bytes())
    group = open_zarr("memory://z/exact.mska")
    np.testing.assert_array_equal(_array(group, "BOX")[...], _layers())
    np.testing.assert_array_equal(_array(group, "structures/c")[...], _layers() == 2)


@pytest.fixture(scope="module")
def beyond_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive whose member ``m`` (structure ``organ``, 10 stored chunks of distinct
    bytes) lies beyond the first 64 KiB read: its chunks are fetched, not served from it."""
    space = Space(shape=(20, 96, 64))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 200, space.shape, dtype=np.uint8)
    organ = np.zeros(space.shape, np.uint8)
    for z in range(20):
        organ[z, 10 : 20 + z, 10 + z // 2 : 30] = 1
    path = tmp_path_factory.mktemp("beyond") / "beyond.mska"
    with MaskArchive(path, "w", space=space) as arc:
        mapping = {f"n{v}": v for v in range(1, 200)}
        arc.add_segmask(SegmentationMask(noise, mapping, space), "noise")
        arc.add_segmask(SegmentationMask(organ, {"organ": 1}, space), "m", chunks=(2, 96, 64))
    return path


def test_a_store_pickles_after_reading_structures(beyond_head: Path) -> None:
    from medmask.io import HEAD_GUESS

    store = ArchiveStore(beyond_head)
    group = zarr.open_group(store=store, mode="r")
    with MaskArchive(beyond_head) as arc:
        expected = arc.get_binary_mask_by_names("organ")
    chunks = {}
    for z in range(10):
        ref = store.layout.chunk(f"structures/organ/c/{z}/0/0")
        assert ref is not None
        assert ref.start >= HEAD_GUESS
        chunks[z] = _file_bytes(beyond_head, ref.start, ref.end)
    assert len(set(chunks.values())) == 10
    # a read of part of the structure checks its bbox with all ten chunks; zarr asks for two
    np.testing.assert_array_equal(_array(group, "structures/organ")[0:4], expected[0:4])
    shipped = pickle.dumps(store)
    for z in range(2, 10):  # fetched for the check, never asked for: not shipped
        assert chunks[z] not in shipped
    clone = pickle.loads(shipped)
    assert clone == store
    again = zarr.open_group(store=clone, mode="r")
    np.testing.assert_array_equal(_array(again, "structures/organ")[...], expected)  # fetches anew
    np.testing.assert_array_equal(_array(again, "m")[...], expected)
    # a whole read checks the bbox while zarr's concurrent requests wait on it: the store
    # still pickles and its copy reads
    fresh = ArchiveStore(beyond_head)
    np.testing.assert_array_equal(
        _array(zarr.open_group(store=fresh, mode="r"), "structures/organ")[...], expected
    )
    copy = pickle.loads(pickle.dumps(fresh))
    np.testing.assert_array_equal(
        _array(zarr.open_group(store=copy, mode="r"), "structures/organ")[6:9], expected[6:9]
    )


def test_root_documents_of_a_msk_and_of_an_empty_archive(tmp_path: Path) -> None:
    path = _small_msk(tmp_path / "one.msk")
    store = ArchiveStore(path)
    attrs = _doc(store, "zarr.json")["attributes"]["medmask"]
    assert {k: v for k, v in attrs.items() if k != "created_by"} == {
        "layout_version": "1.0",
        "container": "msk",
        "format_version": "1.0",
        "generation": 0,
        "members": {"mask": "mask"},
    }
    assert _doc(store, "mask/zarr.json")["attributes"]["medmask"] == {
        "member": "",
        "layer": False,
        "codec": {"id": "medmask.edges", "level": 9},
    }
    assert sorted(_doc(store, "structures/zarr.json")["attributes"]["names"]) == ["a", "b"]

    import dataclasses

    from damaged_archives import commit_directory, sound

    empty = tmp_path / "empty.mska"  # a generation with no member and no shared space
    sound(empty)
    commit_directory(empty, lambda d: dataclasses.replace(d, members=(), space=None))
    store = ArchiveStore(empty)
    assert _canonical(_doc(store, "zarr.json")) == _canonical(
        {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "medmask": {
                    "layout_version": "1.0",
                    "container": "mska",
                    "format_version": "1.0",
                    "generation": 2,
                    "members": {},
                    "created_by": f"medmask {medmask.__version__}",
                },
                "space": None,
            },
            "consolidated_metadata": {
                "kind": "inline",
                "must_understand": False,
                "metadata": {
                    "structures": {
                        "zarr_format": 3,
                        "node_type": "group",
                        "attributes": {"structures": {}, "names": {}},
                    }
                },
            },
        }
    )
    assert sync(_collect_aiterator(store.list())) == ("structures/zarr.json", "zarr.json")


# --- to_zarr / from_zarr, exactly ----------------------------------------------------------------


def test_to_zarr_writes_the_exact_array(tmp_path: Path) -> None:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 2, 3:5] = 2
    data[0, 0, 0] = 1
    mapping = {"bg": 0, "one": 1, "two": 2, "none": 7}  # 0 named; 7 named but absent
    mask = SegmentationMask(data, mapping, Space(shape=(4, 5, 6)))
    array = medmask.to_zarr(mask, zarr.storage.MemoryStore(), level=1)
    meta = array.metadata.to_dict()
    assert meta["codecs"] == ({"name": "medmask.edges", "configuration": {"level": 1}},)
    assert array.compressors == ()
    assert array.shards is None
    assert array.chunks == (4, 5, 6)
    assert array.fill_value == 0
    assert meta["dimension_names"] == ("z", "y", "x")
    space = {
        "coordinate_system": "LPS",
        "axes": "zyx",
        "shape": [4, 5, 6],
        "origin": [0.0, 0.0, 0.0],
        "spacing": [1.0, 1.0, 1.0],
        "directions": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "affine": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                   [0.0, 0.0, 0.0, 1.0]],
    }  # fmt: skip
    assert _canonical(dict(array.attrs)) == _canonical(
        {
            "labels": {"bg": 0, "one": 1, "two": 2, "none": 7},
            "label_stats": {  # named labels but background; an absent one has no voxels
                "one": {"count": 1, "bbox": [[0, 0], [0, 0], [0, 0]]},
                "two": {"count": 4, "bbox": [[1, 2], [2, 2], [3, 4]]},
                "none": {"count": 0, "bbox": None},
            },
            "space": space,
            "medmask": {"layout_version": "1.0"},
        }
    )
    assert medmask.from_zarr(array) == mask
    # the default level, and shards of several chunks
    sharded = medmask.to_zarr(mask, tmp_path / "s.zarr", chunks=(2, 5, 3), shards=(4, 5, 6))
    assert sharded.shards == (4, 5, 6)
    assert sharded.chunks == (2, 5, 3)
    assert [c.to_dict()["name"] for c in sharded.metadata.codecs] == ["sharding_indexed"]  # type: ignore[union-attr]
    assert medmask.from_zarr(str(tmp_path / "s.zarr")) == mask


def test_to_zarr_replaces_an_existing_array(tmp_path: Path) -> None:
    target = tmp_path / "again.zarr"
    medmask.to_zarr(_labels(1, [1, 2]), target)
    second = _labels(2, [3])
    medmask.to_zarr(second, target)
    assert medmask.from_zarr(target) == second


def test_to_zarr_refuses_what_is_no_mask() -> None:
    with pytest.raises(medmask.InvalidTypeError) as info:
        medmask.to_zarr(np.zeros((2, 2, 2), np.uint8), zarr.storage.MemoryStore())  # type: ignore[arg-type]
    assert str(info.value) == "Expected a SegmentationMask. Got ndarray."


@pytest.mark.parametrize(
    ("dtype", "bit_depth"),
    [(np.bool_, 1), (np.uint8, 8), (np.uint16, 16), (np.uint32, 32)],
)
def test_from_zarr_keeps_the_bit_depth(dtype: Any, bit_depth: int) -> None:
    data = np.zeros((4, 5, 6), dtype)
    data[1, 2, 3] = 1  # fits in any bit depth: only the dtype tells it
    mask = SegmentationMask(data, {"one": 1}, Space(shape=(4, 5, 6)), bit_depth=bit_depth)
    array = medmask.to_zarr(mask, zarr.storage.MemoryStore())
    assert array.dtype == np.dtype(dtype)
    again = medmask.from_zarr(array)
    assert again.bit_depth == bit_depth
    assert again == mask


def test_from_zarr_refuses_with_the_problem(tmp_path: Path) -> None:
    with pytest.raises(medmask.InvalidTypeError) as type_info:
        medmask.from_zarr(5)  # type: ignore[arg-type]
    assert str(type_info.value) == "Expected a zarr array or URL. Got int."
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    with pytest.raises(medmask.InvalidTypeError) as type_info:
        medmask.from_zarr(group)  # type: ignore[arg-type]
    assert str(type_info.value) == "Expected a zarr array or URL. Got Group."

    space: dict[str, Any] = {k: v for k, v in OBLIQUE_DOC.items() if k != "shape"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, ""),
        ({"labels": {"a": 1}}, "labels"),
        ({"space": space, "medmask": {}}, "medmask, space"),
        ({"labels": [["a", 1]], "space": space}, "labels, space"),
    ]
    for attributes, got in cases:
        array = zarr.create_array(
            zarr.storage.MemoryStore(), shape=(6, 8, 8), dtype="u1", attributes=attributes
        )
        with pytest.raises(medmask.InvalidValueError) as value_info:
            medmask.from_zarr(array)
        assert str(value_info.value) == (
            "/: expected 'labels' and 'space' attributes (written by to_zarr or shown by "
            f"open_zarr). Got {got}."
        )
    flat = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(8, 8),
        dtype="u1",
        attributes={"labels": {"a": 1}, "space": space},
    )
    with pytest.raises(medmask.InvalidValueError) as value_info:
        medmask.from_zarr(flat)
    assert str(value_info.value) == "/: expected a 3-D (z, y, x) array. Got (8, 8)."
    oblique = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(6, 8, 8),
        dtype="u1",
        attributes={"labels": {"a": 1}, "space": space},
    )
    assert medmask.from_zarr(oblique).space == OBLIQUE
    for labels, error, problem in [
        ({"a": "x"}, medmask.InvalidTypeError, "Got str: 'x'."),
        ({"a": 1.0}, medmask.InvalidTypeError, "Got float: 1.0."),
        ({"a": -1}, medmask.InvalidValueError, "Got -1."),
    ]:
        bad = zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(6, 8, 8),
            dtype="u1",
            attributes={"labels": labels, "space": space},
        )
        with pytest.raises(error) as bad_info:
            medmask.from_zarr(bad)
        message = str(bad_info.value)
        assert message.startswith("/: the 'labels' attribute is not a label table: Expected")
        assert message.endswith(problem)
    missing = tmp_path / "missing.zarr"
    with pytest.raises(FileNotFoundError):
        medmask.from_zarr(missing)
    assert not missing.exists()  # opened read-only: nothing created


def test_to_zarr_and_from_zarr_with_storage_options(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a URL written as a local path would land here
    mask = _labels(7, [1, 4])
    url = s3.url("native.zarr")
    array = medmask.to_zarr(mask, url, storage_options=s3.storage_options, chunks=CHUNKS)
    assert array.chunks == CHUNKS
    assert s3.fs.exists(s3.path("native.zarr/zarr.json"))
    assert list(tmp_path.iterdir()) == []
    assert medmask.from_zarr(url, storage_options=s3.storage_options) == mask


def test_to_zarr_overwrite_false_refuses_an_existing_array_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a URL written as a local path would land here
    target = tmp_path / "kept.zarr"
    first, second = _labels(1, [1, 2]), _labels(2, [3])
    medmask.to_zarr(first, target, chunks=CHUNKS)
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    for where in (target, str(target), target.as_uri()):
        with pytest.raises(medmask.MaskFileExistsError) as info:
            medmask.to_zarr(second, where, overwrite=False)
        assert str(info.value) == (
            f"{os.fspath(where)}: a zarr array exists there; pass overwrite=True to replace "
            "it. Nothing was written."
        )
        assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert medmask.from_zarr(target) == first
    medmask.to_zarr(second, target.as_uri(), overwrite=True)  # a file:// URL is the path
    assert medmask.from_zarr(target) == second
    assert [p.name for p in tmp_path.iterdir()] == ["kept.zarr"]


def test_to_zarr_overwrite_false_refuses_a_group_and_v2_nodes(tmp_path: Path) -> None:
    mask = _labels(1, [1, 2])
    cases: list[tuple[Any, str]] = []
    group_store = zarr.storage.MemoryStore()
    zarr.open_group(group_store, mode="w", zarr_format=3)
    cases.append((group_store, "group"))
    for kind in ("array", "group"):  # zarr itself checks only for v3 nodes
        store = zarr.storage.MemoryStore()
        if kind == "array":
            zarr.create_array(store, shape=(2, 2, 2), dtype="u1", zarr_format=2)
        else:
            zarr.open_group(store, mode="w", zarr_format=2)
        cases.append((store, kind))
    inner = zarr.storage.MemoryStore()  # a v2 array below the root, addressed by a StorePath
    zarr.create_array(inner, name="sub", shape=(2, 2, 2), dtype="u1", zarr_format=2)
    cases.append((zarr.storage.StorePath(inner, "sub"), "array"))
    local = zarr.storage.LocalStore(tmp_path / "v2.zarr")
    zarr.create_array(local, shape=(2, 2, 2), dtype="u1", zarr_format=2)
    cases.append((local, "array"))
    for target, kind in cases:
        base = target.store if isinstance(target, zarr.storage.StorePath) else target
        keys = sorted(sync(_collect_aiterator(base.list())))
        with pytest.raises(medmask.MaskFileExistsError) as info:
            medmask.to_zarr(mask, target, overwrite=False)
        assert str(info.value) == (
            f"{target}: a zarr {kind} exists there; pass overwrite=True to replace it. "
            "Nothing was written."
        )
        assert sorted(sync(_collect_aiterator(base.list()))) == keys, target
    # overwrite=True replaces any of them
    medmask.to_zarr(mask, local, overwrite=True)
    assert medmask.from_zarr(zarr.open_array(local, mode="r")) == mask


def test_to_zarr_overwrite_false_writes_where_nothing_is(tmp_path: Path) -> None:
    mask = _labels(1, [1, 2])
    assert medmask.from_zarr(medmask.to_zarr(mask, tmp_path / "new.zarr", overwrite=False)) == mask
    store = zarr.storage.MemoryStore()
    assert medmask.from_zarr(medmask.to_zarr(mask, store, overwrite=False)) == mask
    other = zarr.storage.MemoryStore()  # an array elsewhere in the store is not in the way
    zarr.create_array(other, name="elsewhere", shape=(2, 2, 2), dtype="u1", zarr_format=2)
    target = zarr.storage.StorePath(other, "mask")
    assert medmask.from_zarr(medmask.to_zarr(mask, target, overwrite=False)) == mask


# --- the package: a pure layout, the store, conversion ---------------------------------------


def test_the_package_keeps_its_names() -> None:
    import medmask.zarr_store as package
    from medmask.codecs.zarr3 import SelectLabelCodec
    from medmask.zarr_store import convert, layout, store

    for name in [
        "FORMAT_VERSION", "ArchiveStore", "Layout", "from_zarr", "node_name", "open_zarr",
        "space_attributes", "space_from_attributes", "to_zarr", "LAYOUT_VERSION", "STRUCTURES",
    ]:  # fmt: skip
        assert name in package.__all__, name
        assert hasattr(package, name), name
    assert package.LAYOUT_VERSION == package.FORMAT_VERSION == "1.0"
    assert package.ArchiveStore is store.ArchiveStore
    assert package.to_zarr is convert.to_zarr
    assert package.Layout is layout.Layout
    assert SelectLabelCodec.codec_name == convert.SELECT_LABEL
    assert medmask.ArchiveStore is store.ArchiveStore
    assert medmask.open_zarr is store.open_zarr
    assert medmask.from_zarr is convert.from_zarr


def test_the_layout_is_pure() -> None:
    """layout.py imports neither zarr nor storage and opens nothing: it computes."""
    import ast

    import medmask.zarr_store.layout as layout

    tree = ast.parse(Path(layout.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported, "no imports found"
    for name in imported:
        top = name.lstrip(".").split(".")[0]
        assert top not in {"zarr", "fsspec", "s3fs", "gcsfs", "io", "os", "asyncio"}, name
        assert not name.startswith(("..io", "..zarr", ".store", ".convert")), name
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
             if isinstance(n.func, ast.Name)}  # fmt: skip
    assert "open" not in calls


async def test_get_partial_values_fetches_its_chunks_in_one_read(beyond_head: Path) -> None:
    from medmask.io import HEAD_GUESS

    store = ArchiveStore(beyond_head)
    await store._load()
    source = store._source_reader()
    calls: list[list[tuple[int, int]]] = []

    class Recording:
        name, size = source.name, source.size

        async def read(self, start: int, end: int) -> bytes:
            raise AssertionError("single reads are not expected")

        async def read_ranges(self, ranges: Any) -> list[bytes]:
            calls.append(list(ranges))
            return await source.read_ranges(ranges)

        def close(self) -> None:
            source.close()

    store._reader = Recording()
    keys = [f"m/c/{z}/0/0" for z in (7, 0, 3, 9)]
    refs = [store.layout.chunk(key) for key in keys]
    assert all(ref is not None and ref.start >= HEAD_GUESS for ref in refs)
    key_ranges: list[tuple[str, Any]] = [
        (keys[0], None),
        ("zarr.json", RangeByteRequest(0, 5)),
        (keys[1], RangeByteRequest(2, 9)),
        ("m/c/99/0/0", None),  # no such key
        (keys[2], SuffixByteRequest(4)),
        (keys[3], OffsetByteRequest(3)),
        (keys[0], RangeByteRequest(1, 2)),  # the same chunk twice
    ]
    got = await store.get_partial_values(default_buffer_prototype(), key_ranges)
    # one read of every chunk, in the order asked (the source merges adjacent ranges)
    assert calls == [[(r.start, r.end) for r in (*refs, refs[0]) if r is not None]]
    chunk = {
        k: _file_bytes(beyond_head, r.start, r.end) for k, r in zip(keys, refs, strict=True) if r
    }
    root = store.layout.document("zarr.json")
    assert root is not None
    expected = [
        chunk[keys[0]], root[:5], chunk[keys[1]][2:9], None, chunk[keys[2]][-4:],
        chunk[keys[3]][3:], chunk[keys[0]][1:2],
    ]  # fmt: skip
    assert [None if b is None else b.to_bytes() for b in got] == expected
    assert await store.get_partial_values(default_buffer_prototype(), []) == []
    assert len(calls) == 1  # no chunk asked for: no read


async def test_get_partial_values_checks_every_chunk(tmp_path: Path) -> None:
    from damaged_archives import crc_mismatch

    bad = tmp_path / "crc.mska"
    crc_mismatch(bad)
    store = ArchiveStore(bad)
    await store._load()
    every = store.layout.keys()
    m1 = [k for k in every if k.startswith("m1/c/")]
    m2 = [k for k in every if k.startswith("m2/c/")]
    assert "m1/c/0/0/0" in m1
    assert m2
    proto = default_buffer_prototype()
    sound = await store.get_partial_values(proto, [(k, None) for k in m2])
    assert all(b is not None for b in sound)
    for keys in ([*m2, "m1/c/0/0/0"], ["m1/c/0/0/0", *m2], m1):
        with pytest.raises(medmask.ChecksumError) as info:
            await store.get_partial_values(proto, [(k, RangeByteRequest(0, 1)) for k in keys])
        assert str(info.value) == (
            f"{bad} [m1]: chunk 0 checksum mismatch; the file is corrupted (or was replaced "
            "since it was opened)."
        )


def test_documents_are_served_after_the_file_changed(tmp_path: Path) -> None:
    """The store is pinned to what it opened: its documents stay readable, its chunks refuse."""
    path = _small_msk(tmp_path / "t.msk")
    store = ArchiveStore(path)
    root = store.get_sync("zarr.json")
    assert root is not None
    _changed(path, "mtime")
    again = sync(store.get_partial_values(default_buffer_prototype(), [("zarr.json", None)]))
    assert [b.to_bytes() if b is not None else None for b in again] == [root.to_bytes()]
    with pytest.raises(medmask.ConcurrentModificationError):
        store.get_sync("mask/c/0/0/0")
