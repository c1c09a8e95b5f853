"""One contract over every codec of the registry (``medmask.codecs.CODECS``), through every
interface: the core class, the numcodecs adapter (with numcodecs' own test helpers) and the
zarr v3 serializer (plain and inside a sharding codec).

Every dtype in both byte orders, zero-size, 1-sized and non-contiguous arrays, and hostile
streams (truncated, bit-flipped, another kind byte), which only ever raise CodecError.
A codec added to the registry runs through all of it; the first tests say what else it needs.
"""

from __future__ import annotations

import pickle
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from numcodecs.tests import common
from zarr.registry import get_codec_class

import medmask.codecs.numcodecs as nc_module
import medmask.codecs.zarr3 as zarr3_module
from medmask.codecs import (
    CODEC_KINDS,
    CODECS,
    CODECS_BY_KIND,
    Codec,
    CodecBase,
    DecodesInto,
    EncodesWithStats,
    decode,
)
from medmask.codecs.numcodecs import adapter_for as numcodecs_adapter
from medmask.codecs.zarr3 import adapter_for as zarr3_adapter
from medmask.errors import CodecError

ROOT = Path(__file__).resolve().parents[2]
NUMCODECS_FIXTURES = ROOT / "tests" / "fixtures" / "numcodecs" / "fixture"

#: The values each codec takes: "binary" (0/1 only) or "labels" (non-negative integers).
DOMAIN = {"medmask.binary": "binary", "medmask.labels": "labels", "medmask.edges": "labels"}

IDS = list(CODECS)
DTYPES = [
    "|b1",
    "|u1",
    "|i1",
    *(f"{order}{kind}{size}" for kind in "ui" for size in (2, 4, 8) for order in "<>"),
]
SHAPES = [(5, 7, 9), (6, 11), (23,), (1,), (1, 1, 1), (0,), (0, 3, 4), (3, 0, 2), (2, 3, 0)]


def sample(codec_id: str, dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Boxes of a few values (1 and the dtype's largest among them) on zeros."""
    dt = np.dtype(dtype)
    a = np.zeros(shape, dt)
    if a.size == 0:
        return a
    top = 1 if DOMAIN[codec_id] == "binary" or dt == np.bool_ else int(np.iinfo(dt).max)
    rng = np.random.default_rng(seed)
    for value in sorted({1, top, max(1, top // 3), min(top, 2)}):
        box = []
        for n in shape:
            lo = int(rng.integers(0, n))
            box.append(slice(lo, int(rng.integers(lo + 1, n + 1))))
        a[tuple(box)] = value
    return a


def views(a: np.ndarray) -> Iterator[np.ndarray]:
    """Non-contiguous views of ``a`` (reversed, strided, transposed) where it has them."""
    if a.size > 1:
        yield a[::-1]
        yield a.T
        if a.shape[0] > 2:
            yield a[::2]


@pytest.fixture(params=IDS)
def codec_id(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the registry and what a codec needs besides its class -------------------------------------


def test_the_tables_are_built_from_the_classes() -> None:
    assert len(set(CODEC_KINDS.values())) == len(CODECS)  # one kind byte per codec
    for codec_id, cls in CODECS.items():
        assert cls.codec_id == codec_id
        assert issubclass(cls, CodecBase)
        assert isinstance(cls(), Codec)
        assert CODEC_KINDS[codec_id] == cls.kind
        assert CODECS_BY_KIND[cls.kind] is cls


def test_every_codec_says_which_values_it_takes() -> None:
    assert set(DOMAIN) == set(CODECS), "add the new codec to DOMAIN"


def test_every_codec_has_both_adapters_and_entry_points(codec_id: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]
    for module, adapter, group in (
        (nc_module, numcodecs_adapter(codec_id), "numcodecs.codecs"),
        (zarr3_module, zarr3_adapter(codec_id), "zarr.codecs"),
    ):
        name = adapter.__name__
        assert getattr(module, name) is adapter, f"publish {name} in {module.__name__}"
        assert name in module.__all__
        assert entry_points[group][codec_id] == f"{module.__name__}:{name}"
    assert numcodecs_adapter(codec_id).codec_id == codec_id
    assert zarr3_adapter(codec_id).codec_name == codec_id


def test_adapter_for_an_unknown_id_is_a_codec_error() -> None:
    for adapter_for in (numcodecs_adapter, zarr3_adapter):
        with pytest.raises(CodecError, match=r"Expected a codec id in .*Got 'medmask\.nope'"):
            adapter_for("medmask.nope")


def test_the_capabilities_are_protocols() -> None:
    for cls in CODECS.values():
        codec = cls()
        assert isinstance(codec, DecodesInto) == hasattr(codec, "decode_into")
        assert isinstance(codec, EncodesWithStats) == hasattr(codec, "encode_with_stats")
    assert isinstance(CODECS["medmask.edges"](), DecodesInto)
    assert isinstance(CODECS["medmask.edges"](), EncodesWithStats)
    assert not isinstance(CODECS["medmask.labels"](), DecodesInto)


# --- the core class -----------------------------------------------------------------------------


def check_values(values: np.ndarray | None, array: np.ndarray) -> None:
    """``decode_with_values``: None, or sorted distinct uint64 values holding every non-zero
    value of the array and nothing but the array's values and 0."""
    if values is None:
        return
    assert values.dtype == np.uint64
    assert np.array_equal(values, np.unique(values))
    present = {int(v) for v in np.unique(array)}
    assert present - {0} <= {int(v) for v in values} <= present | {0}


def check_core(codec: Codec, array: np.ndarray) -> bytes:
    """Every decode call gives ``array`` back exactly (dtype and byte order included)."""
    data = codec.encode(array)
    assert codec.encode(np.ascontiguousarray(array)) == data
    for got in (
        codec.decode(data),
        codec.decode(bytearray(data), shape=array.shape, dtype=array.dtype),
        codec.decode(memoryview(data)),
        decode(data),
    ):
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        assert got.tobytes() == np.ascontiguousarray(array).tobytes()
    got, values = codec.decode_with_values(data)
    assert got.tobytes() == np.ascontiguousarray(array).tobytes()
    check_values(values, array)
    if isinstance(codec, DecodesInto):
        out = np.empty(array.shape, array.dtype)
        present: list[np.ndarray | None] = []
        codec.decode_into(data, out, present=present)
        np.testing.assert_array_equal(out, array)
        check_values(present[0], array)
    if isinstance(codec, EncodesWithStats):
        stream, stats = codec.encode_with_stats(array)
        assert stream == data
        if stats is not None:
            values, counts = np.unique(array, return_counts=True)
            expected = {int(v): int(n) for v, n in zip(values, counts, strict=True) if v}
            assert {int(r["value"]): int(r["count"]) for r in stats} == expected
    return data


@pytest.mark.parametrize("dtype", DTYPES)
def test_core_round_trips(codec_id: str, dtype: str, path: str) -> None:
    codec = CODECS[codec_id](level=3)
    for seed, shape in enumerate(SHAPES):
        array = sample(codec_id, dtype, shape, seed)
        data = check_core(codec, array)
        if array.size:
            with pytest.raises(CodecError):
                codec.decode(data, shape=(*array.shape[:-1], array.shape[-1] + 1))
        for view in views(array):
            assert not view.flags.c_contiguous or view.ndim == 1
            check_core(codec, view)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if "i" in d])
def test_core_refuses_negative_values(codec_id: str, dtype: str) -> None:
    array = np.array([[0, 1], [-1, 0]], dtype=dtype)
    with pytest.raises(CodecError, match="non-negative"):
        CODECS[codec_id]().encode(array)


def hostile_array(codec_id: str) -> np.ndarray:
    return sample(codec_id, "<u2", (3, 6, 11), seed=5)


def outcome(call: Any, data: bytes) -> np.ndarray | None:
    """The decoded array, or None for a CodecError (anything else fails the test)."""
    try:
        return np.asarray(call(data))
    except CodecError:
        return None


def test_every_truncation_is_a_codec_error(codec_id: str, path: str) -> None:
    codec = CODECS[codec_id]()
    adapter = numcodecs_adapter(codec_id)()
    data = codec.encode(hostile_array(codec_id))
    for n in range(len(data)):
        for call in (codec.decode, decode, adapter.decode):
            with pytest.raises(CodecError):
                call(data[:n])
    with pytest.raises(CodecError):
        codec.decode(data + b"\x00")


def test_every_bit_flip_is_a_codec_error_or_harmless(codec_id: str, path: str) -> None:
    codec = CODECS[codec_id]()
    array = hostile_array(codec_id)
    data = codec.encode(array)
    silent = 0
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            for call in (codec.decode, decode):
                got = outcome(call, bytes(bad))
                if got is not None:  # a don't-care bit (e.g. a zstd window descriptor)
                    silent += 1
                    assert got.tobytes() == array.tobytes()
    assert silent <= 2 * 3 * len(data) // 20


def test_another_kind_byte_is_a_codec_error(codec_id: str, path: str) -> None:
    codec = CODECS[codec_id]()
    data = codec.encode(hostile_array(codec_id))
    for kind in range(256):
        if kind == codec.kind:
            continue
        bad = data[:4] + bytes([kind]) + data[5:]
        with pytest.raises(CodecError):
            codec.decode(bad)
        if kind in CODECS_BY_KIND:  # another codec's decoder refuses it
            with pytest.raises(CodecError):
                decode(bad)
        else:
            with pytest.raises(CodecError, match=f"Expected codec kind .*Got {kind}"):
                decode(bad)


# --- the numcodecs adapter ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_numcodecs_encode_decode(codec_id: str, dtype: str) -> None:
    codec = numcodecs_adapter(codec_id)(level=3)
    core = CODECS[codec_id](level=3)
    for seed, shape in enumerate(SHAPES):
        array = sample(codec_id, dtype, shape, seed)
        arrays = [array, np.asfortranarray(array), array.reshape(-1)]
        for a in arrays:
            common.check_encode_decode(a, codec)
            common.check_encode_decode_array(a, codec)
        assert codec.encode(array) == core.encode(array)


def test_numcodecs_config_repr_and_pickle(codec_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = numcodecs_adapter(codec_id)
    codec = adapter(level=5)
    common.check_config(codec)
    monkeypatch.setitem(vars(common), adapter.__name__, adapter)  # check_repr evals there
    common.check_repr(f"{adapter.__name__}(level=5)")
    assert pickle.loads(pickle.dumps(codec)) == codec
    assert type(numcodecs.get_codec({"id": codec_id})) is adapter  # the entry point
    assert codec.get_config() == CODECS[codec_id](level=5).get_config()


def test_numcodecs_reads_its_committed_fixtures(
    codec_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numcodecs' own fixture check, on fixtures that must all exist (the helper would write
    missing ones instead of failing)."""
    folder = NUMCODECS_FIXTURES / codec_id
    arrays = sorted(folder.glob("array.*.npy"))
    assert arrays, f"commit numcodecs fixtures for {codec_id} (tests/fixtures/make_fixtures.py)"
    codecs = [numcodecs_adapter(codec_id)(), numcodecs_adapter(codec_id)(level=1)]
    for j in range(len(codecs)):
        assert (folder / f"codec.{j:02d}" / "config.json").is_file()
        for i in range(len(arrays)):
            assert (folder / f"codec.{j:02d}" / f"encoded.{i:02d}.dat").is_file()
    monkeypatch.chdir(NUMCODECS_FIXTURES.parent)
    loaded = [np.load(f) for f in arrays]
    common.check_backwards_compatibility(codec_id, loaded, codecs)


# --- the zarr v3 serializer ---------------------------------------------------------------------


def zarr_round_trip(serializer: Any, data: np.ndarray, **kwargs: Any) -> zarr.Array:
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(
        store,
        shape=data.shape,
        dtype=data.dtype,
        serializer=serializer,
        compressors=None,
        fill_value=0,
        **kwargs,
    )
    array[...] = data
    read = zarr.open_array(store, mode="r")
    got = read[...]
    # zarr v3 metadata keeps no byte order (the bytes codec would): native values come back
    assert got.dtype == data.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, data)
    return read


@pytest.mark.parametrize("dtype", DTYPES)
def test_zarr3_round_trips(codec_id: str, dtype: str) -> None:
    serializer = zarr3_adapter(codec_id)(level=3)
    volume = sample(codec_id, dtype, (5, 7, 9))
    read = zarr_round_trip(serializer, volume, chunks=(2, 3, 9))  # edge chunks on two axes
    assert read.metadata.codecs == (serializer,)
    np.testing.assert_array_equal(read[1:4, 2:7, 3:8], volume[1:4, 2:7, 3:8])
    sharded = zarr_round_trip(serializer, volume, chunks=(2, 3, 9), shards=(4, 6, 9))
    assert sharded.metadata.codecs[0].codecs == (serializer,)  # inside the sharding codec
    zarr_round_trip(serializer, np.asfortranarray(volume), chunks=(2, 3, 9))
    for shape in [(1,), (1, 1, 1), (0, 4)]:
        zarr_round_trip(serializer, sample(codec_id, dtype, shape), chunks=(1,) * len(shape))


def test_zarr3_config_pickle_and_entry_point(codec_id: str) -> None:
    cls = zarr3_adapter(codec_id)
    codec = cls(level=4)
    assert codec.to_dict() == {"name": codec_id, "configuration": {"level": 4}}
    assert cls.from_dict(codec.to_dict()) == codec
    assert pickle.loads(pickle.dumps(codec)) == codec
    assert get_codec_class(codec_id) is cls
    assert codec.codec_name == CODECS[codec_id].codec_id


def test_zarr3_a_corrupt_chunk_is_a_codec_error(codec_id: str) -> None:
    store = zarr.storage.MemoryStore()
    data = sample(codec_id, "<u2", (4, 6, 8))
    array = zarr.create_array(
        store,
        shape=data.shape,
        chunks=data.shape,
        dtype=data.dtype,
        serializer=zarr3_adapter(codec_id)(),
        compressors=None,
        fill_value=0,
    )
    array[...] = data
    chunk = store._store_dict["c/0/0/0"]
    raw = bytearray(chunk.to_bytes())
    for cut in (raw[: len(raw) // 2], raw[:4] + bytes([raw[4] ^ 0x7F]) + raw[5:]):
        store._store_dict["c/0/0/0"] = chunk.from_bytes(bytes(cut))
        with pytest.raises(CodecError):
            zarr.open_array(store, mode="r")[...]
