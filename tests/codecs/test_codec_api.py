"""get_codec, choose_codec, configs and input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medmask.codecs import BinaryCodec, Codec, EdgesCodec, LabelCodec, choose_codec, get_codec
from medmask.errors import CodecError


def test_get_config_roundtrip(codec_cls: type) -> None:
    codec = codec_cls(level=5)
    config = codec.get_config()
    assert config == {"id": codec_cls.codec_id, "level": 5}
    assert json.loads(json.dumps(config)) == config
    assert get_codec(config) == codec
    assert get_codec({"id": codec_cls.codec_id}) == codec_cls()
    assert isinstance(codec, Codec)


def test_default_levels() -> None:
    assert BinaryCodec().level == 9
    assert LabelCodec().level == 9


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"id": "medmask.nope"}, "Expected a codec id"),
        ({}, "Expected a codec id"),
        ({"id": 3}, "Expected a codec id"),
        ({"id": "medmask.labels", "level": 0}, "Expected a level in 1..22"),
        ({"id": "medmask.labels", "level": 23}, "Expected a level in 1..22"),
        ({"id": "medmask.binary", "level": "3"}, "Expected an int level"),
        ({"id": "medmask.binary", "level": True}, "Expected an int level"),
        ({"id": "medmask.binary", "speed": 3}, "Expected config keys"),
    ],
)
def test_get_codec_rejects_bad_configs(config: dict[str, object], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        get_codec(config, strict=True)


def test_get_codec_ignores_keys_of_newer_versions_unless_strict() -> None:
    """docs/format.md section 1: a reader ignores unknown keys, in ``codec`` too (the stream
    carries what decoding needs); a writer asking for an unknown option is refused."""
    newer = {"id": "medmask.labels", "level": 3, "added_in_1_1": True}
    assert get_codec(newer) == LabelCodec(level=3)
    with pytest.raises(
        CodecError, match=r"Expected config keys 'id' and 'level'. Got also \['added_in_1_1'\]"
    ):
        get_codec(newer, strict=True)
    with pytest.raises(CodecError, match=r"Expected a level in 1\.\.22"):
        get_codec({"id": "medmask.labels", "level": 0, "new": 1})  # known keys still checked


def test_get_codec_rejects_non_mapping() -> None:
    with pytest.raises(CodecError, match="Expected a codec config mapping"):
        get_codec([("id", "medmask.labels")])  # type: ignore[arg-type]


def test_choose_codec() -> None:
    assert choose_codec(np.zeros((2, 2), bool)) == EdgesCodec()
    assert choose_codec(np.ones((2, 2), np.uint32)) == EdgesCodec()
    assert choose_codec(np.zeros((0, 2), np.uint16)) == EdgesCodec()
    assert choose_codec(np.full((2, 2), 2, np.uint8)) == EdgesCodec()
    assert choose_codec(np.full((2, 2), 2, np.uint8), level=3) == EdgesCodec(level=3)
    assert choose_codec(np.zeros(3, np.int16)) == EdgesCodec()
    with pytest.raises(CodecError, match="Expected dtype bool, uint8-uint64 or int8-int64"):
        choose_codec(np.zeros(3, np.float32))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3, np.float32), "Expected dtype bool, uint8-uint64 or int8-int64"),
        (np.zeros(3, np.complex64), "Expected dtype bool, uint8-uint64 or int8-int64"),
        (np.zeros((1, 1, 1, 1), np.uint8), "Expected a 1-D, 2-D or 3-D array"),
        (np.zeros((), np.uint8), "Expected a 1-D, 2-D or 3-D array"),
    ],
)
def test_encode_rejects_unsupported_input(codec_cls: type, array: np.ndarray, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec_cls().encode(array)


def test_encode_rejects_non_arrays(codec_cls: type) -> None:
    with pytest.raises(CodecError, match="Expected a numpy array"):
        codec_cls().encode(b"\x00\x01")


def test_binary_rejects_labels() -> None:
    with pytest.raises(CodecError, match="Expected only values 0 and 1"):
        BinaryCodec().encode(np.array([0, 1, 2], np.uint8))


def test_decode_checks_expected_shape_and_dtype(codec_cls: type) -> None:
    a = np.zeros((2, 3, 4), np.uint8)
    a[1, 1, 1] = 1
    data = codec_cls().encode(a)
    with pytest.raises(CodecError, match=r"Expected shape \(2, 3, 5\)\. Got \(2, 3, 4\)"):
        codec_cls().decode(data, shape=(2, 3, 5))
    with pytest.raises(CodecError, match=r"Expected dtype uint16\. Got uint8"):
        codec_cls().decode(data, dtype=np.uint16)
    np.testing.assert_array_equal(codec_cls().decode(data, shape=[2, 3, 4], dtype="u1"), a)


def test_decode_rejects_the_other_codec_stream() -> None:
    a = np.eye(4, dtype=np.uint8)
    with pytest.raises(CodecError, match=r"Expected a medmask\.labels stream"):
        LabelCodec().decode(BinaryCodec().encode(a))
    with pytest.raises(CodecError, match=r"Expected a medmask\.binary stream"):
        BinaryCodec().decode(LabelCodec().encode(a))


def test_codecs_are_frozen_and_hashable(codec_cls: type) -> None:
    codec = codec_cls()
    with pytest.raises(AttributeError):
        codec.level = 3
    assert len({codec_cls(), codec_cls(), codec_cls(level=2)}) == 2


def _label_blocks(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    top = {"uint8": 255, "uint16": 65535, "uint32": 2**32 - 1}[dtype]
    out = np.zeros(shape, dtype)
    for _ in range(int(rng.integers(0, 6))):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape, strict=True)]
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = rng.integers(1, top)
    if rng.random() < 0.3:  # a value that appears only in a late slice, off the first one
        out[-1, -1, -1] = rng.integers(1, top)
    return out


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_decode_with_values_gives_exactly_the_distinct_values(dtype: str) -> None:
    rng = np.random.default_rng(11)
    codec = LabelCodec()
    told = 0
    for _ in range(200):
        shape = tuple(int(s) for s in rng.integers(1, 12, size=3))
        array = _label_blocks(rng, shape, dtype)
        out, values = codec.decode_with_values(codec.encode(array))
        np.testing.assert_array_equal(out, array)
        if values is not None:
            told += 1
            assert values.tolist() == np.unique(array).tolist()
    assert told > 50  # runs mode (not plain) on most of these small arrays


def test_binary_decode_with_values() -> None:
    codec = BinaryCodec()
    empty = np.zeros((3, 4, 13), bool)
    assert codec.decode_with_values(codec.encode(empty))[1].tolist() == []
    empty[2, 3, 12] = True
    out, values = codec.decode_with_values(codec.encode(empty))
    assert values.tolist() == [1]
    np.testing.assert_array_equal(out, empty)
