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
from medmask.codecs.zarr3 import (
    BinaryCodec,
    EdgesCodec,
    LabelsCodec,
    SelectLabelCodec,
    adapter_for,
)
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


def test_the_published_names_stay() -> None:
    """zarr metadata names the codecs, entry points and pickles name the classes: neither
    changes."""
    assert BinaryCodec is adapter_for("medmask.binary")
    assert LabelsCodec is adapter_for("medmask.labels")
    assert EdgesCodec is adapter_for("medmask.edges")
    for cls in (BinaryCodec, LabelsCodec, EdgesCodec):
        assert cls.__module__ == "medmask.codecs.zarr3"
        assert cls.__qualname__ == cls.__name__
        assert cls().to_dict()["name"] == cls.codec_name


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


# --- exact behaviour: boundaries, messages, metadata (kills mutmut survivors) ---------------


def _spec(shape: tuple[int, ...], dtype: str, fill: Any = 0, order: str = "C") -> Any:
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.dtype import get_data_type_from_native_dtype

    return ArraySpec(
        shape=shape,
        dtype=get_data_type_from_native_dtype(np.dtype(dtype)),
        fill_value=fill,
        config=ArrayConfig(order=order, write_empty_chunks=True),  # type: ignore[arg-type]
        prototype=zarr.core.buffer.default_buffer_prototype(),
    )


def _decode_chunk(codec: Any, stream: bytes, spec: Any) -> np.ndarray:
    buffer = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(stream)
    (chunk,) = zarr.core.sync.sync(codec.decode([(buffer, spec)]))
    return np.asarray(chunk.as_numpy_array())


def test_an_edge_chunk_trimmed_along_one_axis_only_reads() -> None:
    """The last chunk along axis 0 of (9, 13, 11) in (4, 5, 6) chunks, stored as (1, 5, 6): as
    long as the chunk on the other axes (equal is within)."""
    data = _labels()
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=SHAPE, chunks=CHUNKS, dtype="uint16", serializer=LabelsCodec(),
        compressors=None, fill_value=0,
    )[...] = data  # fmt: skip
    _put(store, "c/2/0/0", LabelsCore().encode(np.ascontiguousarray(data[8:9, 0:5, 0:6])))
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_a_narrower_stream_dtype_is_refused_even_if_safely_castable() -> None:
    data = np.zeros((4, 5, 6), np.uint16)
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=data.shape, chunks=data.shape, dtype="uint16", serializer=LabelsCodec(),
        compressors=None, fill_value=0,
    )[...] = data  # fmt: skip
    _put(store, "c/0/0/0", LabelsCore().encode(np.ones((4, 5, 6), np.uint8)))
    with pytest.raises(
        CodecError,
        match=r"^Expected a medmask\.labels chunk of dtype uint16 \(the array's\)\. Got dtype "
        r"uint8 in the stream header \(values are never cast\)\.$",
    ):
        zarr.open_array(store, mode="r")[...]


def test_fit_chunk_refuses_a_larger_array_and_pads_in_the_array_dtype() -> None:
    from medmask.codecs.zarr3 import fit_chunk

    with pytest.raises(
        CodecError,
        match=r"^Expected a medmask\.edges chunk of shape \(4, 5\) \(or an edge chunk within "
        r"it\)\. Got \(5, 5\)\.$",
    ):
        fit_chunk(np.zeros((5, 5), np.uint8), (4, 5), 0, "medmask.edges")
    small = np.full((2, 3), 7, np.uint16)
    out = fit_chunk(small, (4, 5), 0, "medmask.edges")  # a Python int fill value
    assert out.dtype == np.uint16
    expected = np.zeros((4, 5), np.uint16)
    expected[:2, :3] = 7
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("cls", [LabelsCodec, EdgesCodec, BinaryCodec])
def test_level_is_stored_as_a_python_int(cls: Any) -> None:
    codec = cls(level=np.int64(5))
    assert type(codec.level) is int
    assert codec.to_dict() == {"name": cls.codec_name, "configuration": {"level": 5}}
    assert type(codec.to_dict()["configuration"]["level"]) is int  # JSON metadata


def test_level_refusals_name_the_codec() -> None:
    with pytest.raises(CodecError, match=r"level in 1\.\.22 for codec 'medmask\.labels'\. Got 0"):
        LabelsCodec(level=0)
    with pytest.raises(CodecError, match=r"int level for codec 'medmask\.edges'\. Got bool"):
        EdgesCodec(level=True)


def test_from_dict_refuses_another_codec_name() -> None:
    with pytest.raises(ValueError, match=r"Expected 'medmask\.labels'\. Got medmask\.edges"):
        LabelsCodec.from_dict({"name": "medmask.edges"})
    with pytest.raises(ValueError, match=r"Expected 'medmask\.binary'\. Got medmask\.labels"):
        BinaryCodec.from_dict({"name": "medmask.labels", "configuration": {"level": 3}})
    with pytest.raises(ValueError, match=r"Expected 'medmask\.select_label'\. Got medmask\.labels"):
        SelectLabelCodec.from_dict(
            {"name": "medmask.labels", "configuration": {"value": 1, "source": "uint8"}}
        )
    config = {"name": "medmask.select_label", "configuration": {"value": 3, "source": "uint16"}}
    assert SelectLabelCodec.from_dict(config) == SelectLabelCodec(value=3, source="uint16")


def test_dtype_refusal_names_the_codec() -> None:
    with pytest.raises(
        TypeError, match=r"\(1, 2, 4 or 8 bytes\) for codec 'medmask\.edges'\. Got float32\."
    ):
        zarr.create_array(
            zarr.storage.MemoryStore(), shape=(4,), dtype="float32", serializer=EdgesCodec(),
            compressors=None,
        )  # fmt: skip


def test_chunks_decode_with_their_shape_so_the_no_shape_limit_does_not_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAX_DECODED_NBYTES bounds decodes *without* shape=; zarr's chunk shape is passed."""
    from medmask.codecs import _stream

    data = _labels()
    monkeypatch.setattr(_stream, "MAX_DECODED_NBYTES", 16)
    for codec in (LabelsCodec(), EdgesCodec()):
        array = _create(codec, data)
        np.testing.assert_array_equal(array[...], data)


@pytest.mark.parametrize("codec", [LabelsCodec(), EdgesCodec()], ids=lambda c: c.codec_name)
def test_uint64_values_above_2_53_read_exactly(codec: Any) -> None:
    data = np.zeros((4, 5, 6), np.uint64)
    data[0, 0, :3] = [2**64 - 1, 2**63 + 1, 2**53 + 1]
    data[3, 4, 5] = 2**62 + 3
    array = _create(codec, data, chunks=(4, 5, 6))
    assert np.asarray(array[...]).dtype == np.uint64
    np.testing.assert_array_equal(array[...], data)
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=data.shape, chunks=data.shape, dtype="uint64", serializer=codec,
        compressors=None, fill_value=0,
    )  # fmt: skip
    _put(store, "c/0/0/0", codec._core().encode(data.astype(">u8")))  # big-endian stream
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)


def test_a_big_endian_stream_decodes_to_a_chunk_of_the_array_dtype() -> None:
    data = (np.arange(120, dtype=np.uint16) * 300).reshape(4, 5, 6)
    spec = _spec((4, 5, 6), "uint16")
    chunk = _decode_chunk(LabelsCodec(), LabelsCore().encode(data.astype(">u2")), spec)
    assert chunk.dtype == np.dtype("uint16")  # native, as the spec says
    np.testing.assert_array_equal(chunk, data)
    trimmed = _decode_chunk(LabelsCodec(), LabelsCore().encode(data[:2, :5, :4].copy()), spec)
    assert trimmed.dtype == np.dtype("uint16")
    np.testing.assert_array_equal(trimmed[:2, :, :4], data[:2, :, :4])
    assert not trimmed[2:].any()
    assert not trimmed[:, :, 4:].any()


@pytest.mark.parametrize("value", [-1, 2.5, True, "3", None])
def test_select_label_refuses_a_value_that_is_not_a_non_negative_int(value: Any) -> None:
    with pytest.raises(CodecError, match=r"^Expected a non-negative int label value\. Got "):
        SelectLabelCodec(value=value, source="uint8")


@pytest.mark.parametrize(
    ("source", "largest"),
    [("uint8", 255), ("uint16", 65535), ("bool", 1), ("int8", 127), ("uint64", 2**64 - 1)],
)
def test_select_label_value_bounds(source: str, largest: int) -> None:
    assert SelectLabelCodec(value=0, source=source).value == 0  # the background
    assert SelectLabelCodec(value=largest, source=source).value == largest
    with pytest.raises(CodecError, match=f"^Expected a label value that fits {source} "):
        SelectLabelCodec(value=largest + 1, source=source)


def test_select_label_of_a_bool_source_keeps_what_is_written() -> None:
    """Regression: value 2 with a bool source was accepted, and every write read back False."""
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store, shape=(4,), chunks=(4,), dtype="bool",
        filters=[SelectLabelCodec(value=1, source="bool")], serializer=LabelsCodec(),
        compressors=None, fill_value=False,
    )  # fmt: skip
    target = np.array([True, False, True, False])
    array[...] = target
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], target)


def test_select_label_value_0_selects_the_background() -> None:
    codec = SelectLabelCodec(value=0, source="uint8")
    labels = np.array([[0, 3], [3, 0]], np.uint8)
    spec = _spec((2, 2), "bool", fill=False)
    proto = zarr.core.buffer.default_buffer_prototype()
    decoded = codec._decode_sync(proto.nd_buffer.from_numpy_array(labels), spec)
    np.testing.assert_array_equal(decoded.as_numpy_array(), labels == 0)


def test_select_label_refuses_a_non_bool_array_naming_the_codec() -> None:
    with pytest.raises(
        TypeError, match=r"^Expected a bool array for codec 'medmask\.select_label'\.$"
    ):
        zarr.create_array(
            zarr.storage.MemoryStore(), shape=(4,), dtype="uint8",
            filters=[SelectLabelCodec(value=1, source="uint8")], serializer=LabelsCodec(),
            compressors=None,
        )  # fmt: skip


def test_select_label_resolves_the_stored_label_map_spec() -> None:
    codec = SelectLabelCodec(value=7, source="uint16")
    spec = _spec((4, 5, 6), "bool", fill=True, order="F")
    resolved = codec.resolve_metadata(spec)
    assert resolved.shape == (4, 5, 6)
    assert np.dtype(resolved.dtype.to_native_dtype()) == np.uint16
    assert resolved.fill_value is not None
    assert resolved.fill_value == 0
    assert resolved.config == spec.config  # order F, write_empty_chunks kept
    assert resolved.prototype is spec.prototype
    assert codec.compute_encoded_size(10, spec) == 20


def test_select_label_writes_its_value_on_zeros() -> None:
    data = _labels("uint8")
    value = int(data.max())
    target = data == value
    store = zarr.storage.MemoryStore()
    zarr.create_array(
        store, shape=SHAPE, chunks=SHAPE, dtype="bool",
        filters=[SelectLabelCodec(value=value, source="uint8")], serializer=LabelsCodec(),
        compressors=None, fill_value=False,
    )[...] = target  # fmt: skip
    assert target.any()
    assert not target.all()
    proto = zarr.core.buffer.default_buffer_prototype()
    raw = zarr.core.sync.sync(store.get("c/0/0/0", proto))
    assert raw is not None
    stored = LabelsCore().decode(raw.to_bytes())
    np.testing.assert_array_equal(stored, np.where(target, value, 0).astype(np.uint8))


@pytest.mark.parametrize("codec", [LabelsCodec(), EdgesCodec(), BinaryCodec()], ids=str)
def test_a_0_d_array_round_trips(codec: Any) -> None:
    """A 0-D chunk is coded as one element, shape (1,), and decoded back to 0-D."""
    store = zarr.storage.MemoryStore()
    dtype = "bool" if isinstance(codec, BinaryCodec) else "uint16"
    array = zarr.create_array(
        store, shape=(), dtype=dtype, serializer=codec, compressors=None, fill_value=0
    )
    array[...] = 1
    again = zarr.open_array(store, mode="r")
    assert np.asarray(again[...]).shape == ()
    assert int(np.asarray(again[...])) == 1


@pytest.mark.parametrize("codec", [LabelsCodec(), EdgesCodec(), BinaryCodec()], ids=str)
def test_serializers_have_no_fixed_encoded_size(codec: Any) -> None:
    name = codec.codec_name.replace(".", r"\.")
    with pytest.raises(NotImplementedError, match=rf"^{name} streams have a variable size$"):
        codec.compute_encoded_size(120, _spec((4, 5, 6), "uint8"))
