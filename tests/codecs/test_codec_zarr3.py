"""The zarr v3 codecs (``medmask.codecs.zarr3``): serializers in plain and sharded arrays,
entry-point registration, trimmed edge chunks, ``medmask.select_label``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
import zarr
from codec_helpers import label_volume

from medmask.codecs import BinaryCodec as BinaryCore
from medmask.codecs import EdgesCodec as EdgesCore
from medmask.codecs import LabelCodec as LabelsCore
from medmask.codecs.zarr3 import BinaryCodec, EdgesCodec, LabelsCodec, SelectLabelCodec
from medmask.errors import CodecError

SHAPE = (9, 13, 11)
CHUNKS = (4, 5, 6)  # edge chunks on every axis


def _labels(dtype: str = "uint16") -> np.ndarray:
    return (label_volume(SHAPE, np.uint8, seed=3) % 90).astype(dtype)


def _create(serializer: Any, data: np.ndarray, **kwargs: Any) -> zarr.Array:
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store,
        shape=data.shape,
        chunks=kwargs.pop("chunks", CHUNKS),
        dtype=data.dtype,
        serializer=serializer,
        compressors=None,
        fill_value=0,
        **kwargs,
    )
    array[...] = data
    return zarr.open_array(store, mode="r")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int16", "int64", "uint64"])
def test_labels_serializer_round_trip(dtype: str) -> None:
    data = _labels(dtype)
    array = _create(LabelsCodec(level=3), data)
    assert array.metadata.codecs == (LabelsCodec(level=3),)
    np.testing.assert_array_equal(array[...], data)
    np.testing.assert_array_equal(array[2:8, 1:12, 5:11], data[2:8, 1:12, 5:11])


@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint16", "int32", "uint64"])
def test_edges_serializer_round_trip(dtype: str) -> None:
    data = _labels(dtype) if dtype != "bool" else _labels() > 0
    array = _create(EdgesCodec(level=3), data)
    assert array.metadata.codecs == (EdgesCodec(level=3),)
    np.testing.assert_array_equal(array[...], data)
    np.testing.assert_array_equal(array[2:8, 1:12, 5:11], data[2:8, 1:12, 5:11])
    sharded = _create(EdgesCodec(), data, chunks=(2, 5, 6), shards=(4, 10, 12))
    np.testing.assert_array_equal(sharded[...], data)
    assert EdgesCodec.from_dict(EdgesCodec(level=4).to_dict()) == EdgesCodec(level=4)
    assert EdgesCodec().to_dict() == {"name": "medmask.edges", "configuration": {"level": 9}}


@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint32"])
def test_binary_serializer_round_trip(dtype: str) -> None:
    data = (_labels() > 0).astype(dtype)
    array = _create(BinaryCodec(), data)
    np.testing.assert_array_equal(array[...], data)


@pytest.mark.parametrize("order", ["C", "F"])
def test_memory_order_does_not_change_values(order: str) -> None:
    data = _labels()
    array = _create(LabelsCodec(), data, config={"order": order})
    np.testing.assert_array_equal(array[...], data)


def test_inside_sharding() -> None:
    data = _labels()
    array = _create(LabelsCodec(), data, chunks=(2, 5, 6), shards=(4, 10, 12))
    np.testing.assert_array_equal(array[...], data)
    assert array.metadata.codecs[0].codecs == (LabelsCodec(level=9),)  # type: ignore[attr-defined]


def test_four_dimensional_chunks_are_coded_as_three() -> None:
    data = np.stack([_labels(), _labels()[::-1]])
    array = _create(LabelsCodec(), data, chunks=(1, 4, 5, 6))
    np.testing.assert_array_equal(array[...], data)


def test_config_round_trip_and_validation() -> None:
    assert LabelsCodec.from_dict(LabelsCodec(level=4).to_dict()) == LabelsCodec(level=4)
    assert LabelsCodec.from_dict({"name": "medmask.labels"}) == LabelsCodec()
    assert BinaryCodec().to_dict() == {"name": "medmask.binary", "configuration": {"level": 9}}
    with pytest.raises(CodecError, match="level"):
        LabelsCodec(level=0)
    with pytest.raises(TypeError, match="bool or integer data type"):
        zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(4,),
            dtype="float32",
            serializer=LabelsCodec(),
            compressors=None,
        )


def test_trimmed_edge_chunk_decodes_padded() -> None:
    """A ``.msk`` stores the edge chunk of (9, 13, 11) with chunks (4, 5, 6) at [8:9, 10:13,
    6:11] as a (1, 3, 5) stream; zarr asks for a (4, 5, 6) chunk and trims it afterwards."""
    data = _labels()
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store, shape=SHAPE, chunks=CHUNKS, dtype="uint16", serializer=LabelsCodec(),
        compressors=None, fill_value=0,
    )  # fmt: skip
    array[...] = data
    edge = np.ascontiguousarray(data[8:9, 10:13, 6:11])
    zarr.core.sync.sync(
        store.set("c/2/2/1", zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(
            LabelsCore().encode(edge)
        ))
    )  # fmt: skip
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    too_big = LabelsCore().encode(np.zeros((5, 5, 6), np.uint16))
    zarr.core.sync.sync(
        store.set("c/0/0/0", zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(too_big))
    )
    with pytest.raises(CodecError, match=r"Expected a medmask.labels chunk of shape \(4, 5, 6\)"):
        zarr.open_array(store, mode="r")[...]


def _put(store: Any, key: str, stream: bytes) -> None:
    buffer = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(stream)
    zarr.core.sync.sync(store.set(key, buffer))


@pytest.mark.parametrize("codec", [EdgesCodec(), LabelsCodec()], ids=lambda c: c.codec_name)
def test_a_stream_of_another_dtype_is_refused_not_cast(codec: Any) -> None:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1, 2, 3] = 2
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=data.shape, chunks=data.shape, dtype="uint8", serializer=codec,
        compressors=None, fill_value=0,
    )[...] = data  # fmt: skip
    core = codec._core()
    _put(store, "c/0/0/0", core.encode(np.where(data == 2, 258, 0).astype(np.uint16)))
    with pytest.raises(CodecError, match=r"dtype uint8 \(the array's\)\. Got dtype uint16"):
        zarr.open_array(store, mode="r")[...]  # 258 would read as 2 if cast
    _put(store, "c/0/0/0", core.encode(np.zeros((4, 30), np.uint8)))  # fewer axes
    with pytest.raises(CodecError, match=r"shape \(4, 5, 6\) .*Got shape \(4, 30\)"):
        zarr.open_array(store, mode="r")[...]
    _put(store, "c/0/0/0", core.encode(data))  # the sound stream reads
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_a_big_endian_stream_of_the_same_values_reads() -> None:
    data = _labels("uint16")
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=SHAPE, chunks=SHAPE, dtype="uint16", serializer=EdgesCodec(),
        compressors=None, fill_value=0,
    )  # fmt: skip
    _put(store, "c/0/0/0", EdgesCore().encode(data.astype(">u2")))
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_select_label_shows_one_label_as_bool() -> None:
    data = _labels("uint8")
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store,
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="bool",
        filters=[SelectLabelCodec(value=int(data.max()), source="uint8")],
        serializer=LabelsCodec(),
        compressors=None,
        fill_value=False,
    )
    target = data == data.max()
    array[...] = target
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], target)
    keys = zarr.core.sync.sync(zarr.core.sync._collect_aiterator(store.list_prefix("c/")))
    assert keys  # chunks without the label are not written (fill value)
    raw = zarr.core.sync.sync(store.get(keys[0], zarr.core.buffer.default_buffer_prototype()))
    assert raw is not None
    assert LabelsCore().decode(raw.to_bytes()).dtype == np.uint8  # stored as a label map
    with pytest.raises(CodecError, match="fits uint8"):
        SelectLabelCodec(value=300, source="uint8")


def test_registered_in_a_fresh_process_without_importing_medmask() -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np, zarr
        store = zarr.storage.MemoryStore()
        for name, data in (("medmask.labels", np.arange(60, dtype="uint16").reshape(3, 4, 5)),
                           ("medmask.binary", np.eye(6, dtype=bool)),
                           ("medmask.edges", np.arange(60, dtype="uint16").reshape(3, 4, 5))):
            a = zarr.create_array(store, name=name, shape=data.shape, chunks=(2,) * data.ndim,
                                  dtype=data.dtype, serializer={"name": name},
                                  compressors=None, fill_value=0)
            a[...] = data
            b = zarr.open_array(store, path=name, mode="r")
            assert np.array_equal(b[...], data), name
            assert type(b.metadata.codecs[0]).__module__ == "medmask.codecs.zarr3"
        assert "medmask" not in sys.argv  # nothing but zarr was asked for
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_same_stream_bytes_as_the_core_codecs() -> None:
    data = np.ascontiguousarray(_labels()[:4, :5, :6])
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=data.shape, chunks=data.shape, dtype=data.dtype,
        serializer=LabelsCodec(level=5), compressors=None, fill_value=0,
    )[...] = data  # fmt: skip
    raw = zarr.core.sync.sync(store.get("c/0/0/0", zarr.core.buffer.default_buffer_prototype()))
    assert raw is not None
    assert raw.to_bytes() == LabelsCore(level=5).encode(data)
    assert BinaryCore().decode(BinaryCore().encode(data > 0)).dtype == np.bool_
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=data.shape, chunks=data.shape, dtype=data.dtype,
        serializer=EdgesCodec(level=5), compressors=None, fill_value=0,
    )[...] = data  # fmt: skip
    proto = zarr.core.buffer.default_buffer_prototype()
    raw = zarr.core.sync.sync(store.get("c/0/0/0", proto))
    assert raw is not None
    assert raw.to_bytes() == EdgesCore(level=5).encode(data)
