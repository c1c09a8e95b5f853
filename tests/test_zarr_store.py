"""``ArchiveStore`` / ``open_zarr``: archives and masks as zarr v3 arrays, from any URL.

``TestArchiveStoreContract`` runs zarr's own ``StoreTests``. Those tests write arbitrary keys
through the store or through a backend hook and read them back; a read-only store whose keys
are synthesized from a file has neither, so each such test is overridden below with the same
check on the store's real keys (or with the check that the write is refused). Every test of
the base class runs; none is skipped.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from spacetransformer import Space
from zarr.abc.store import (
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    SupportsDeleteSync,
    SupportsSetSync,
)
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator, sync
from zarr.testing.store import StoreTests

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.zarr_store import ArchiveStore, node_name, open_zarr

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

    async def test_get_bytes(self, store: ArchiveStore) -> None:
        data = await store._get_bytes("zarr.json", prototype=default_buffer_prototype())
        assert json.loads(data)["zarr_format"] == 3
        with pytest.raises(FileNotFoundError):
            await store._get_bytes("nonexistent_key", prototype=default_buffer_prototype())

    def test_get_bytes_sync(self, store: ArchiveStore) -> None:
        data = store._get_bytes_sync("zarr.json", prototype=default_buffer_prototype())
        assert json.loads(data)["node_type"] == "group"

    async def test_get_json(self, store: ArchiveStore) -> None:
        got = await store._get_json("organs/zarr.json", prototype=default_buffer_prototype())
        assert got["node_type"] == "array"

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

    def test_set_sync(self, store: ArchiveStore) -> None:
        assert not isinstance(store, SupportsSetSync)

    def test_delete_sync(self, store: ArchiveStore) -> None:
        assert not isinstance(store, SupportsDeleteSync)

    def test_delete_sync_missing(self, store: ArchiveStore) -> None:
        assert not isinstance(store, SupportsDeleteSync)


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
