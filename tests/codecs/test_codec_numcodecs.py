"""The numcodecs adapters (entry points ``medmask.binary`` / ``medmask.labels``)."""

from __future__ import annotations

import pickle

import numcodecs
import numpy as np
import pytest
from codec_helpers import label_volume

from medmask.codecs import BinaryCodec, LabelCodec
from medmask.codecs.numcodecs import BinaryMaskCodec, LabelMapCodec
from medmask.errors import CodecError

ADAPTERS = [(BinaryMaskCodec, BinaryCodec), (LabelMapCodec, LabelCodec)]


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
    np.testing.assert_array_equal(clone.decode(codec.encode(a)), a)
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
        assert got.shape == a.shape
        np.testing.assert_array_equal(got, a)
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
    np.testing.assert_array_equal(codec.decode(codec.encode(a)), a)


@pytest.mark.parametrize(("adapter", "core"), ADAPTERS)
def test_adapter_errors(adapter: type, core: type) -> None:
    with pytest.raises(CodecError, match="Expected a numpy array"):
        adapter().encode(b"abc")
    with pytest.raises(CodecError):
        adapter().decode(b"not a stream")
    with pytest.raises(CodecError):
        adapter(level=99)
