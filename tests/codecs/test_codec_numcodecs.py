"""The numcodecs adapters (entry points ``medmask.binary`` / ``medmask.labels`` /
``medmask.edges``)."""

from __future__ import annotations

import array
import pickle
import re
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from codec_helpers import label_volume
from numcodecs.tests import common

from medmask.codecs import CODECS
from medmask.codecs.numcodecs import BinaryMaskCodec, EdgeMapCodec, LabelMapCodec, adapter_for
from medmask.errors import CodecError

# every codec of the registry (binary, labels, edges), each with its numcodecs class
ADAPTERS = [(adapter_for(codec_id), core) for codec_id, core in CODECS.items()]
NUMCODECS_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "numcodecs"


def test_the_published_names_stay() -> None:
    """numcodecs configs and pickles name these classes; the ids and names never change."""
    assert BinaryMaskCodec is adapter_for("medmask.binary")
    assert LabelMapCodec is adapter_for("medmask.labels")
    assert EdgeMapCodec is adapter_for("medmask.edges")
    for cls in (BinaryMaskCodec, LabelMapCodec, EdgeMapCodec):
        assert cls.__module__ == "medmask.codecs.numcodecs"
        assert cls.__qualname__ == cls.__name__


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_registered_through_entry_points(adapter: type, core: type) -> None:
    codec = numcodecs.get_codec({"id": core.codec_id})
    assert type(codec) is adapter
    assert codec.codec_id == core.codec_id
    assert numcodecs.get_codec({"id": core.codec_id, "level": 4}).level == 4


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_config_roundtrip_and_pickle(adapter: type, core: type) -> None:
    codec = adapter(level=7)
    config = codec.get_config()
    assert config == {"id": core.codec_id, "level": 7}
    assert adapter.from_config(config) == codec
    assert adapter.from_config({"level": 7}) == codec
    assert numcodecs.get_codec(config) == codec
    clone = pickle.loads(pickle.dumps(codec))
    assert clone == codec
    a = label_volume((4, 9, 10), np.uint8, seed=1) > 0
    np.testing.assert_array_equal(clone.decode(codec.encode(a)), a.reshape(-1))
    with pytest.raises(CodecError, match="Expected a config"):
        adapter.from_config({"id": "other", "level": 3})


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_same_bytes_as_core_codec(adapter: type, core: type) -> None:
    a = (label_volume((5, 12, 13), np.uint16, seed=2) > 0).astype(np.uint16)
    assert adapter(level=3).encode(a) == core(level=3).encode(a)


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_decode_into_out_and_from_buffers(adapter: type, core: type) -> None:
    a = (label_volume((3, 8, 21), np.uint32, seed=3) > 0).astype(np.uint32)
    codec = adapter()
    data = codec.encode(a)
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        got = codec.decode(buf)
        assert got.dtype == a.dtype
        assert got.shape == (a.size,)  # flat, in memory order, as numcodecs codecs return
        np.testing.assert_array_equal(got, a.reshape(-1))
    out = np.empty_like(a)
    assert codec.decode(data, out=out) is out
    np.testing.assert_array_equal(out, a)
    flat = np.empty(a.size, dtype=a.dtype)
    codec.decode(data, out=flat)
    np.testing.assert_array_equal(flat, a.reshape(-1))
    with pytest.raises(CodecError, match="Expected an out= buffer"):
        codec.decode(data, out=np.empty(3, np.uint32))


def test_labels_adapter_on_labels() -> None:
    a = label_volume((6, 10, 10), np.uint16, seed=4)
    codec = numcodecs.get_codec({"id": "medmask.labels"})
    np.testing.assert_array_equal(codec.decode(codec.encode(a)), a.reshape(-1))


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_adapter_errors(adapter: type, core: type) -> None:
    with pytest.raises(CodecError):
        adapter().decode(b"not a stream")
    with pytest.raises(CodecError):
        adapter(level=99)
    with pytest.raises(TypeError, match="Expected dtype"):
        adapter().encode(np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="object array"):
        adapter().encode(np.array(["a"], dtype=object))


# --- numcodecs' own test helpers --------------------------------------------------------------


def _arrays(binary: bool) -> list[np.ndarray]:
    """Arrays of every accepted dtype, in C and F order, little and big endian."""
    base = label_volume((6, 7, 9), np.uint8, seed=6) % 100
    if binary:
        base = (base > 0).astype(np.uint8)
    out = []
    for dtype in ("u1", "i1", "<u2", ">u2", "<i2", ">i4", "<u4", "<i8", ">u8", "|b1"):
        if dtype == "|b1" and not binary:
            continue
        arr = base.astype(dtype)
        out += [arr, np.asfortranarray(arr), arr[0], arr.reshape(-1)]
    return out


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_numcodecs_check_encode_decode(adapter: type, core: type) -> None:
    codec = adapter()
    for arr in _arrays(binary=adapter is BinaryMaskCodec):
        common.check_encode_decode(arr, codec)
        common.check_encode_decode_array(arr, codec)


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_numcodecs_object_buffers(adapter: type, core: type) -> None:
    codec = adapter()
    if adapter is not BinaryMaskCodec:
        common.check_err_decode_object_buffer(codec)
    else:  # np.arange(10) is no binary mask: the same check on 0/1 values
        enc = codec.encode(np.arange(10) % 2)
        with pytest.raises(TypeError):
            codec.decode(enc, out=np.empty(10, dtype=object))
    common.check_err_encode_object_buffer(codec)


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_numcodecs_config_and_repr(adapter: type, core: type) -> None:
    common.check_config(adapter(level=5))
    assert repr(adapter(level=5)) == f"{adapter.__name__}(level=5)"


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_numcodecs_backwards_compatibility(
    adapter: type, core: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numcodecs' fixture check against streams committed in tests/fixtures/numcodecs."""
    monkeypatch.chdir(NUMCODECS_FIXTURES)
    arrays = _arrays(binary=adapter is BinaryMaskCodec)[:12]
    common.check_backwards_compatibility(core.codec_id, arrays, [adapter(), adapter(level=1)])


def test_decode_into_a_fortran_out_buffer_writes_memory_order() -> None:
    """zarr v2 decodes F-ordered chunks with out=: the bytes must land in memory order."""
    arr = np.asfortranarray(label_volume((4, 5, 6), np.uint16, seed=7))
    codec = LabelMapCodec()
    out = np.empty_like(arr)  # F-ordered as well
    codec.decode(codec.encode(arr), out=out)
    np.testing.assert_array_equal(out, arr)
    with pytest.raises(CodecError, match="contiguous"):
        codec.decode(codec.encode(arr), out=np.empty((4, 5, 12), np.uint16)[:, :, ::2])


# --- zarr v2 arrays with these compressors -----------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<u2", ">u2", ">i4", "u1"])
@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_zarr_v2_round_trip(adapter: type, core: type, order: str, dtype: str) -> None:
    import zarr

    data = label_volume((9, 13, 11), np.uint8, seed=8) % 100
    if adapter is BinaryMaskCodec:
        data = data > 0
    data = data.astype(dtype)
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store,
        shape=data.shape,
        chunks=(4, 5, 6),  # edge chunks on every axis
        dtype=dtype,
        order=order,
        zarr_format=2,
        compressors=adapter(level=3),
        fill_value=0,
    )
    array[...] = data
    again = zarr.open_array(store, mode="r", zarr_format=2)
    assert again.metadata.compressor.get_config() == {"id": core.codec_id, "level": 3}
    np.testing.assert_array_equal(again[...], data)
    np.testing.assert_array_equal(again[1:7, 2:11, 3:9], data[1:7, 2:11, 3:9])


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_a_chunk_stream_is_never_reinterpreted_into_out(adapter: type, core: type) -> None:
    """zarr v2 decodes into the chunk array: a stream of another dtype or shape of the same
    size is refused, not reinterpreted (a uint16 chunk holding 258 would read as 2 and 1)."""
    codec = adapter()
    wide = np.full((2, 10, 10), 1, np.uint16)
    with pytest.raises(CodecError, match="refusing to reinterpret"):
        codec.decode(codec.encode(wide), out=np.empty((4, 10, 10), np.uint8))
    cube = np.ones((4, 10, 5), np.uint8)
    with pytest.raises(CodecError, match="refusing to reinterpret"):
        codec.decode(codec.encode(cube), out=np.empty((4, 5, 10), np.uint8))
    with pytest.raises(CodecError, match="refusing to reinterpret"):
        codec.decode(codec.encode(cube), out=np.empty((4, 10, 5), np.int8))
    for out in (  # its own dtype and shape, F order, flat, and a raw byte buffer
        np.empty((4, 10, 5), np.uint8),
        np.empty((5, 10, 4), np.uint8, order="F"),
        np.empty(200, np.uint8),
    ):
        codec.decode(codec.encode(cube), out=out)
        assert int(out.sum()) == 200


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_a_chunk_of_more_than_3_axes_decodes_into_an_out_of_its_shape(
    adapter: type, core: type
) -> None:
    """A 4-D chunk is coded with its leading axes merged (codecs.md section 8); zarr v2 decodes
    it into an out= of the chunk's own 4-D shape, C or F ordered."""
    codec = adapter()
    chunk = (np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5) % 2).astype(np.uint8)
    for order in ("C", "F"):
        data = np.asarray(chunk, order=order)
        out = np.empty(chunk.shape, np.uint8, order=order)
        codec.decode(codec.encode(data), out=out)
        np.testing.assert_array_equal(out, chunk)
    with pytest.raises(CodecError, match="refusing to reinterpret"):
        codec.decode(codec.encode(chunk), out=np.empty((2, 3, 5, 4), np.uint8))


# --- exact out= rules, messages, buffer inputs (kills mutmut survivors) ---------------------


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_out_rules_for_a_2d_and_a_3d_chunk_stream(adapter: type, core: type) -> None:
    """A multi-dimensional stream decodes into its dtype flat or in its coded shape, or into
    a flat uint8 buffer; any other out= of the same size is refused."""
    codec = adapter()
    plane = (np.arange(24, dtype=np.uint16).reshape(4, 6) % 3 == 0).astype(np.uint16)
    stream = codec.encode(plane)
    refusal = (
        rf"^Expected an out= chunk of the stream's \(4, 6\) uint16 for codec "
        rf"'{core.codec_id}'\. Got {{}} {{}}; refusing to reinterpret\.$"
    )
    for shape, dtype in (((4, 3), "uint32"), ((8, 6), "uint8"), ((24,), "int16")):
        with pytest.raises(CodecError, match=refusal.format(re.escape(str(shape)), dtype)):
            codec.decode(stream, out=np.empty(shape, dtype))
    for out in (np.empty(48, np.uint8), np.empty(24, np.uint16), np.empty((6, 4), ">u2", "F")):
        codec.decode(stream, out=out)
        assert out.tobytes(order="A") == plane.tobytes()  # the bytes, in memory order
    cube = plane.reshape(2, 3, 4)
    with pytest.raises(CodecError, match=r"Got \(6, 4\) uint16; refusing to reinterpret"):
        codec.decode(codec.encode(cube), out=np.empty((6, 4), np.uint16))


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_object_buffers_are_refused_naming_the_codec(adapter: type, core: type) -> None:
    codec = adapter()
    stream = codec.encode(np.zeros(4, np.uint8))
    name = re.escape(repr(core.codec_id))
    with pytest.raises(
        TypeError, match=rf"^Expected a numeric out= buffer for codec {name}\. Got an object"
    ):
        codec.decode(stream, out=np.empty(4, dtype=object))
    with pytest.raises(
        TypeError, match=rf"^Expected a numeric array for codec {name}\. Got an object array\.$"
    ):
        codec.encode(np.array([0, None], dtype=object))


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_buffers_encode_as_their_bytes(adapter: type, core: type) -> None:
    from medmask.codecs import peek_stream

    codec = adapter()
    words = array.array("H", [1, 0, 1, 1])  # typed buffer: coded as its 8 raw bytes
    stream = codec.encode(words)
    prefix = peek_stream(stream)
    assert prefix.dtype == np.uint8
    assert prefix.shape == (8,)
    assert codec.decode(stream).tobytes() == words.tobytes()
    with pytest.raises(TypeError, match="bytes-like object is required, not 'list'"):
        codec.encode([1, 0, 1])
    grid = (np.arange(40, dtype=np.uint8).reshape(4, 10) % 2)[:, ::2]  # neither C nor F
    assert not grid.flags.c_contiguous
    assert not grid.flags.f_contiguous
    np.testing.assert_array_equal(codec.decode(codec.encode(grid)), grid.reshape(-1))
    assert peek_stream(codec.encode(grid)).shape == (4, 5)


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_out_buffer_refusals_word_for_word(adapter: type, core: type) -> None:
    codec = adapter()
    name = re.escape(repr(core.codec_id))
    stream = codec.encode(np.ones((2, 3), np.uint16))
    strided = np.empty((2, 6), np.uint16)[:, ::2]
    with pytest.raises(
        CodecError,
        match=rf"^Expected a contiguous out= buffer for codec {name}\. Got strides \(12, 4\)\.$",
    ):
        codec.decode(stream, out=strided)
    with pytest.raises(
        CodecError,
        match=r"^Expected an out= buffer of 12 bytes for \(2, 3\) uint16\. Got 10 bytes\.$",
    ):
        codec.decode(stream, out=np.empty(5, np.uint16))
    with pytest.raises(
        CodecError,
        match=rf"^Expected a config \{{'id': {name}, 'level': int\}}\. Got \{{'id': {name}, "
        r"'level': 3, 'speed': 1\}\.$",
    ):
        adapter.from_config({"id": core.codec_id, "level": 3, "speed": 1})
