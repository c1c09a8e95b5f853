"""``medmask.edges`` (docs/codecs.md section 6): round trips through the compiled kernel and
the numpy/Python paths (the same bytes, the same arrays), streams assembled by hand from the
spec, ``decode_into`` any strides, and hostile streams that only ever raise CodecError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import both_decoders, label_volume, numpy_paths, varint
from hypothesis import given, settings
from hypothesis import strategies as st

from medmask.codecs import EdgesCodec, decode, kernel_available
from medmask.codecs import _edges as edges
from medmask.errors import CodecError

K = edges.DEFAULT_SHIFT


def test_the_kernel_is_built_here() -> None:
    """Loud failure: where a C compiler is present (or ``MEDMASK_REQUIRE_KERNEL=1``, which CI
    sets) the compiled kernel must import; the numpy fallback is for machines without one.
    ``MEDMASK_KERNEL=0`` turns it off on purpose (then it must not be loaded at all)."""
    import importlib
    import os
    import shutil
    import sys

    if os.environ.get("MEDMASK_KERNEL", "1").strip() == "0":
        assert not kernel_available()
        assert "medmask.codecs._edges_kernel" not in sys.modules
        return
    required = os.environ.get("MEDMASK_REQUIRE_KERNEL") == "1" or any(
        shutil.which(cc) for cc in ("cc", "gcc", "clang")
    )
    try:
        importlib.import_module("medmask.codecs._edges_kernel")
        problem = ""
    except ImportError as exc:
        problem = str(exc)
    if required:
        assert problem == "", f"the compiled edges kernel did not import: {problem}"
        assert kernel_available()
    else:
        assert kernel_available() == (problem == "")


def both_encoders(array: np.ndarray, codec: EdgesCodec | None = None) -> bytes:
    codec = codec or EdgesCodec()
    fast = codec.encode(array)
    with numpy_paths():
        slow = codec.encode(array)
    assert fast == slow  # the kernel and the Python encoder write the same bytes
    return fast


def arrays() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    out = [
        ("zeros", np.zeros((3, 4, 5), np.uint8)),
        ("constant", np.full((3, 4, 5), 7, np.uint16)),
        ("ones-2d-bool", np.ones((2, 3), bool)),
        ("zero-size", np.zeros((0, 3, 4), np.uint8)),
        ("one-voxel", np.ones((1, 1, 1), np.uint8)),
        ("noise-u8", rng.integers(0, 3, (4, 5, 6)).astype(np.uint8)),
        ("noise-bool", rng.random((7, 9, 11)) < 0.5),
        ("wide-u32", rng.integers(0, 70000, (3, 4, 50)).astype(np.uint32)),
        ("wide-u64", rng.integers(0, 2**62, (2, 3, 4)).astype(np.uint64)),
        ("1d-i16", rng.integers(0, 100, (17,)).astype(np.int16)),
        ("alternating", np.tile(np.array([0, 1], np.uint8), (2, 3, 300))),
    ]
    for dtype in (np.bool_, np.uint8, np.uint16, np.uint32):
        out.append((f"volume-{np.dtype(dtype).name}", label_volume((9, 17, 23), dtype, seed=1)))
    vol = label_volume((12, 20, 30), np.uint16, seed=4)
    out += [
        ("int32", vol.astype(np.int32)),
        ("big-endian", vol.astype(">u2")),
        ("int64-big-endian", vol.astype(">i8")),
        ("2d", vol[5]),
        ("1d", vol[5, 10]),
    ]
    return out


@pytest.mark.parametrize(("name", "array"), arrays(), ids=[n for n, _ in arrays()])
def test_round_trip(name: str, array: np.ndarray) -> None:
    data = both_encoders(array)
    out = both_decoders(data)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert decode(data).dtype == array.dtype  # the kind byte dispatches to this codec
    got, values = EdgesCodec().decode_with_values(data)
    np.testing.assert_array_equal(got, array)
    assert values is None or set(np.unique(array).tolist()) <= set(values.tolist())


def test_first_slice_rows_longer_than_a_listed_reference_row() -> None:
    """The numpy decoder keeps a first-slice reference row of at most ``_ROW_LIST`` edges in
    lists and reads a longer one back from the painted output: rows that switch between the
    two (long, short, long, long, short) decode as the kernel decodes them."""
    nx = 2 * edges._ROW_LIST + 40
    a = np.zeros((2, 5, nx), np.uint8)
    for y, period in enumerate((2, 700, 2, 3, 900)):
        a[0, y, ::period] = 1 + y % 3
    a[1] = np.roll(a[0], 1, axis=-1)
    assert max(int(np.count_nonzero(np.diff(row))) for row in a[0]) > edges._ROW_LIST
    data = both_encoders(a)
    assert data[7] == edges.MODE_EDGES
    np.testing.assert_array_equal(both_decoders(data), a)


def smooth_volume(seed: int, shape: tuple[int, int, int], n: int) -> np.ndarray:
    return label_volume(shape, np.uint8, seed=seed, n=n)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(1, 8), st.integers(1, 12), st.integers(3, 40)),
    n=st.integers(0, 8),
    level=st.sampled_from([1, 3, 9]),
)
def test_random_segmentations(seed: int, shape: tuple[int, int, int], n: int, level: int) -> None:
    array = smooth_volume(seed, shape, n)
    out = both_decoders(both_encoders(array, EdgesCodec(level=level)))
    np.testing.assert_array_equal(out, array)


def test_modes_widths_and_sizes() -> None:
    ball = label_volume((16, 32, 32), np.uint8, seed=2)
    assert both_encoders(np.zeros((10, 20, 30), np.uint8))[7] == edges.MODE_CONSTANT
    assert len(EdgesCodec().encode(np.zeros((300, 512, 512), np.uint8)[:1])) == 25
    assert EdgesCodec().encode(ball)[7] == edges.MODE_EDGES
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32)).astype(np.uint8)
    plain = EdgesCodec().encode(noise)
    assert plain[7] == edges.MODE_PLAIN
    assert len(plain) < noise.nbytes + 64
    bits = np.random.default_rng(0).random((8, 32, 64)) < 0.5
    assert len(EdgesCodec().encode(bits)) < bits.size // 8 + 64  # plain bool is bit-packed


def test_decode_into_views_and_dtypes(path: str) -> None:
    vol = label_volume((12, 30, 40), np.uint8, seed=5).astype(np.uint16) * 100
    data = EdgesCodec().encode(vol)
    assert data[7] == edges.MODE_EDGES
    big = np.full((16, 34, 48), 999, np.uint16)
    view = big[2:14, 3:33, 4:44]  # strided along z and y, rows contiguous
    EdgesCodec().decode_into(data, view)
    np.testing.assert_array_equal(view, vol)
    assert (big[:2] == 999).all()
    assert (big[:, :, :4] == 999).all()
    signed = np.empty(vol.shape, np.int16)
    EdgesCodec().decode_into(EdgesCodec().encode(vol.astype(np.int16)), signed)
    np.testing.assert_array_equal(signed, vol)
    swapped = np.empty(vol.shape, ">u2")
    EdgesCodec().decode_into(EdgesCodec().encode(vol.astype(">u2")), swapped)
    np.testing.assert_array_equal(swapped, vol)
    columns = np.empty((40, 30, 12), np.uint16).transpose(2, 1, 0)  # rows not contiguous
    EdgesCodec().decode_into(data, columns)
    np.testing.assert_array_equal(columns, vol)
    present: list[np.ndarray | None] = []
    EdgesCodec().decode_into(data, np.empty(vol.shape, np.uint16), present=present)
    assert present[0] is not None
    assert set(np.unique(vol).tolist()) <= set(present[0].tolist())
    with pytest.raises(CodecError, match="Expected shape"):
        EdgesCodec().decode_into(data, np.empty((12, 30, 39), np.uint16))
    with pytest.raises(CodecError, match="Expected dtype"):
        EdgesCodec().decode_into(data, np.empty(vol.shape, np.uint8))


# --- streams assembled from the spec -----------------------------------------------------------


def stream(
    shape: tuple[int, ...],
    sections: list[bytes],
    *,
    dtype_code: int = 2,
    k: int = 1,
    w: int = 1,
    p: int = 1,
    mode: int = 1,
    compress: bool = False,
    version: int = 2,
) -> bytes:
    """A kind-3 stream built by docs/codecs.md section 6 (raw sections unless ``compress``):
    version 2 with the CRC-32 after the shape, version 1 with it at the end."""
    head = (
        b"MMC"
        + bytes([version, 3, dtype_code, len(shape), mode])
        + struct.pack(f"<{len(shape)}I", *shape)
    )
    stored = [
        zstd.ZstdCompressor(write_content_size=True).compress(s) if compress and s else s
        for s in sections
    ]
    fields = bytes([k, w, p]) + b"".join(
        varint(len(s)) + varint(len(r)) for s, r in zip(stored, sections, strict=True)
    )
    return with_crc(head, fields + b"".join(stored), version)


def with_crc(head: bytes, rest: bytes, version: int = 2) -> bytes:
    """Prefix and shape (``head``), then the rest, with the stream CRC-32 where ``version``
    puts it."""
    if version == 1:
        return head + rest + struct.pack("<I", zlib.crc32(head + rest))
    return head + struct.pack("<I", zlib.crc32(head + rest)) + rest


def fates(codes: list[int]) -> bytes:
    padded = codes + [0] * (len(codes) % 2)
    return bytes(a | (b << 4) for a, b in zip(padded[0::2], padded[1::2], strict=True))


def spec_sections() -> list[bytes]:
    """A 2 x 2 x 6 uint8 array by hand, with K = 1: fate codes 0, 1, 2 move an edge by -1, 0,
    +1 (the new edge's class is the code), 3 deletes; inserted edges have class 3.

    - row (0, 0), no reference: edges (1, 4), (3, 0), (5, 9): one gap, 3 insertions with
      deltas 2, 2, 2 from x = -1 -> [0 4 4 0 0 9];
    - row (0, 1), reference row (0, 0): fates 2, 1, 3 (class 3 stream) -> [0 0 4 0 0 0];
    - row (1, 0), reference row (0, 0): fates 1, 1, 1 -> [0 4 4 0 0 9];
    - row (1, 1), reference row (0, 1) (edges of classes 2 and 1): fate 1 each, then one
      insertion after x = 3 with delta 1 and value 7 -> [0 0 4 0 7 7].
    """
    gaps = bytes([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])  # rows with 0, 3, 3, 2 reference edges
    positions = bytes([2, 2, 2, 1])
    values = bytes([4, 0, 9, 7])
    class1, class2, class3 = fates([1]), fates([1]), fates([2, 1, 3, 1, 1, 1])
    return [gaps, positions, values, b"", class1, class2, class3]


SPEC_ARRAY = np.array(
    [[[0, 4, 4, 0, 0, 9], [0, 0, 4, 0, 0, 0]], [[0, 4, 4, 0, 0, 9], [0, 0, 4, 0, 7, 7]]],
    np.uint8,
)


@pytest.mark.parametrize("version", [1, 2])
def test_a_stream_assembled_by_hand_from_the_spec(path: str, version: int) -> None:
    for compress in (False, True):
        data = stream((2, 2, 6), spec_sections(), compress=compress, version=version)
        np.testing.assert_array_equal(EdgesCodec().decode(data), SPEC_ARRAY)


def test_the_encoder_agrees_with_the_hand_made_stream() -> None:
    """medmask's encoder (K = 6) on the same array, decoded by hand-written rules."""
    data = both_encoders(SPEC_ARRAY)
    np.testing.assert_array_equal(both_decoders(data), SPEC_ARRAY)
    assert data[7] in (edges.MODE_EDGES, edges.MODE_PLAIN)


def test_constant_and_plain_streams_by_hand() -> None:
    head = b"MMC" + bytes([1, 3, 3, 2, 0]) + struct.pack("<2I", 2, 3) + varint(300)
    data = head + struct.pack("<I", zlib.crc32(head))
    np.testing.assert_array_equal(EdgesCodec().decode(data), np.full((2, 3), 300, np.uint16))
    bits = np.array([[1, 0, 1, 1, 0, 0, 0, 1, 1]], bool)
    raw = np.packbits(bits.reshape(-1)).tobytes()
    head = b"MMC" + bytes([1, 3, 1, 2, 2]) + struct.pack("<2I", 1, 9)
    body = head + varint(len(raw)) + varint(len(raw)) + raw
    np.testing.assert_array_equal(
        EdgesCodec().decode(body + struct.pack("<I", zlib.crc32(body))), bits
    )
    values = np.array([[258, 1, 65535]], np.uint16)
    planes = bytes([2, 1, 255, 1, 0, 255])  # low bytes, then high bytes
    head = b"MMC" + bytes([1, 3, 3, 2, 2]) + struct.pack("<2I", 1, 3)
    body = head + varint(6) + varint(6) + planes
    np.testing.assert_array_equal(
        EdgesCodec().decode(body + struct.pack("<I", zlib.crc32(body))), values
    )


# --- hostile streams ---------------------------------------------------------------------------


def spec_stream(**kwargs: object) -> bytes:
    sections = spec_sections()
    for i, value in kwargs.pop("replace", {}).items():  # type: ignore[attr-defined]
        sections[i] = value
    return stream((2, 2, 6), sections, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (spec_stream(replace={6: fates([2, 1, 3, 1, 1, 15])}), "fate codes 0..2K"),
        (spec_stream(replace={6: fates([2, 1, 3, 1])}), "fate code. Got the end"),
        (spec_stream(replace={6: fates([2, 1, 3])}), "fate code. Got the end"),
        (spec_stream(replace={6: fates([2, 1, 3, 1, 1, 1, 1])}), "one fate code per"),
        (spec_stream(replace={6: fates([2, 1, 3, 1, 1, 1]) + b"\x00"}), "one fate code per"),
        (spec_stream(replace={4: bytes([0x11])}), "one fate code per"),  # odd: high nibble set
        (spec_stream(replace={4: fates([0])}), "inside the row"),  # x = 2: not after x = 2
        (spec_stream(replace={0: bytes([3] + [0] * 10 + [1, 0])}), "gaps section"),
        (spec_stream(replace={0: bytes([3] + [0] * 10)}), "gap count"),
        (spec_stream(replace={0: bytes([255, 3, 0, 0, 0] + [0] * 10 + [1])}), ">= 255"),
        (spec_stream(replace={0: bytes([255, 254, 0, 0, 0] + [0] * 10 + [1])}), ">= 255"),
        (
            spec_stream(replace={0: bytes([3, 0, 0, 0, 0, 255, 254, 0, 0, 0, 0, 0, 0, 0, 0, 1])}),
            ">= 255",
        ),  # in slice 1 (numpy: the vectorised rows)
        (spec_stream(replace={0: bytes([3] + [0] * 10 + [255, 1, 0, 0])}), "4 bytes after"),
        (spec_stream(replace={0: bytes([255, 1, 0])}), "4 bytes after"),
        (spec_stream(replace={0: bytes([5] + [0] * 10 + [1])}), "insertions"),
        # a later row asking for more insertions than are left (not more than there are)
        (spec_stream(replace={0: bytes([3, 2] + [0] * 9 + [1])}), "insertions"),
        (spec_stream(replace={1: bytes([2, 2, 9, 1])}), "inside the row"),
        (spec_stream(replace={1: bytes([2, 2, 3, 1])}), "inside the row"),  # x = X exactly
        (spec_stream(replace={1: bytes([2, 0, 2, 1])}), "inside the row"),
        (spec_stream(replace={1: bytes([2, 2, 2, 1, 1]), 2: bytes([4, 0, 9, 7, 1])}), "unused"),
        (spec_stream(k=0), "shift range"),
        (spec_stream(k=8), "shift range"),
        (spec_stream(w=3), "value width"),
        (spec_stream(p=3), "position width"),
        (spec_stream(mode=3), "mode 0"),
        (spec_stream(replace={2: bytes([4, 0, 9])}), "one value per"),
    ],
)
def test_forged_streams_are_refused(path: str, data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=rf"^Expected .*{message}.*\.$"):  # one whole sentence
        EdgesCodec().decode(data)


def test_values_beyond_the_dtype_are_refused(path: str) -> None:
    sections = spec_sections()
    data = stream((2, 2, 6), [sections[0], sections[1], bytes([4, 0, 9, 2]), *sections[3:]])
    EdgesCodec().decode(data)  # uint8: fine
    bool_stream = stream(
        (2, 2, 6), [sections[0], sections[1], bytes([1, 0, 1, 2]), *sections[3:]], dtype_code=1
    )
    with pytest.raises(CodecError, match="fit the dtype"):
        EdgesCodec().decode(bool_stream)


def test_checksums_truncation_and_trailing_bytes(path: str) -> None:
    data = EdgesCodec().encode(label_volume((6, 10, 12), np.uint16, seed=6))
    for n in range(len(data)):
        with pytest.raises(CodecError):
            EdgesCodec().decode(data[:n])
    with pytest.raises(CodecError, match="checksum"):
        EdgesCodec().decode(data + b"\x00")
    with pytest.raises(CodecError, match="checksum"):
        EdgesCodec().decode(data[:30] + bytes([data[30] ^ 1]) + data[31:])


def fix_crc(data: bytes) -> bytes:
    """A version-2 stream with its CRC-32 recomputed (a forged stream)."""
    at = 8 + 4 * data[6] if len(data) > 6 else 0
    if len(data) < at + 4 or data[3] != 2:
        return data
    return with_crc(data[:at], data[at + 4 :])


def test_streams_differ_in_their_crc_32() -> None:
    """A stream must not end in its own CRC-32: then every stream has the same CRC-32 and the
    containers' chunk checksums could not tell one chunk from another."""
    crcs = {zlib.crc32(EdgesCodec().encode(label_volume((6, 10, 12), np.uint8, seed=s)))
            for s in range(8)}  # fmt: skip
    assert len(crcs) == 8


def test_every_byte_corruption_with_a_valid_checksum(path: str) -> None:
    """Corrupted content behind a recomputed CRC: a CodecError or a well-formed array, never
    another exception and never a crash (both decoders)."""
    array = label_volume((12, 30, 40), np.uint8, seed=7)
    data = EdgesCodec(level=1).encode(array)
    assert data[7] == edges.MODE_EDGES
    rng = np.random.default_rng(8)
    cases = [(pos, new) for pos in range(len(data) - 4) for new in (0x00, 0xFF)]
    cases += [(int(p), int(v)) for p, v in rng.integers(0, (len(data) - 4, 256), (800, 2))]
    if path == "numpy":  # slower: a sample
        cases = [cases[i] for i in rng.choice(len(cases), 400, replace=False)]
    for pos, new in cases:
        if new == data[pos]:
            continue
        bad = fix_crc(data[:pos] + bytes([new]) + data[pos + 1 :])
        try:
            out = EdgesCodec().decode(bad)
        except CodecError:
            continue
        assert out.ndim == 3
        assert out.dtype.kind in "bui"


def test_huge_declared_sizes_are_refused_before_allocating(path: str) -> None:
    bomb = zstd.ZstdCompressor(write_content_size=True).compress(b"\x00" * 2_000_000)
    sections = spec_sections()
    head = b"MMC" + bytes([1, 3, 2, 3, 1]) + struct.pack("<3I", 2, 2, 6) + bytes([1, 1, 1])
    fields = (
        varint(len(bomb))
        + varint(2_000_000)
        + b"".join(varint(len(s)) + varint(len(s)) for s in sections[1:])
    )
    body = head + fields + bomb + b"".join(sections[1:])
    with pytest.raises(CodecError, match=f"at most {5 * (24 + 4)} bytes of gaps"):
        EdgesCodec().decode(body + struct.pack("<I", zlib.crc32(body)))
    lying = zstd.ZstdCompressor(write_content_size=True).compress(sections[0] + b"\x00")
    fields = (
        varint(len(lying))
        + varint(len(sections[0]))
        + b"".join(varint(len(s)) + varint(len(s)) for s in sections[1:])
    )
    body = head + fields + lying + b"".join(sections[1:])
    with pytest.raises(CodecError, match="decode to 12 bytes"):
        EdgesCodec().decode(body + struct.pack("<I", zlib.crc32(body)))
    huge = b"MMC" + bytes([1, 3, 2, 3, 0]) + struct.pack("<3I", 100_000, 100_000, 100) + b"\x00"
    with pytest.raises(CodecError, match="Expected at most"):
        EdgesCodec().decode(huge + struct.pack("<I", zlib.crc32(huge)))


@pytest.mark.parametrize("version", [1, 2])
def test_a_shape_whose_size_overflows_64_bits_is_refused(version: int) -> None:
    # 2**22 * 2**21 * 2**21 = 2**64 voxels: a 64-bit product wraps to 0 and once let numpy's
    # own "array is too big" ValueError out of the decoder
    head = b"MMC" + bytes([version, 3, 2, 3, 0]) + struct.pack("<3I", 1 << 22, 1 << 21, 1 << 21)
    with pytest.raises(CodecError, match="Expected a shape numpy can allocate"):
        EdgesCodec().decode(with_crc(head, b"\x00", version))


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.uint32])
def test_stats_from_the_kernel_equal_label_stats(dtype: type) -> None:
    from medmask.values import label_stats

    for seed in range(5):
        array = label_volume((7, 13, 17), dtype, seed=seed)
        _, records = EdgesCodec().encode_with_stats(array)
        if np.dtype(dtype).itemsize > 2 or not kernel_available():
            assert records is None  # 4- and 8-byte values, or no kernel: the caller counts
            continue
        assert records is not None
        got = {
            int(v): (int(c), tuple((int(b[i]), int(b[i + 1])) for i in (0, 2, 4)))
            for v, c, b in records
        }
        want = {v: (s.count, s.bbox) for v, s in label_stats(array).items()}
        assert got == want


def test_mask_files_store_the_same_statistics_whichever_way() -> None:
    import medmask
    from medmask.format.encoding import encode_mask
    from medmask.values import label_stats

    for dtype, chunks in ((np.uint8, (3, 7, 9)), (np.uint16, None), (np.uint32, 2)):
        array = label_volume((9, 14, 18), dtype, seed=3)
        names = {f"v{v}": int(v) for v in np.unique(array) if v}
        mask = medmask.SegmentationMask(array, names)
        entries = encode_mask(mask, chunks=chunks).descriptor.labels
        want = label_stats(mask.data)
        for entry in entries:
            assert (entry.count, entry.bbox) == (want[entry.value].count, want[entry.value].bbox)


def test_files_read_and_write_without_the_compiled_kernel(tmp_path: object) -> None:
    """A machine without a C compiler: the package imports, reads every medmask.edges fixture
    and writes the same bytes (the Python encoder)."""
    import subprocess
    import sys
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
    script = f"""
import sys
sys.modules["medmask.codecs._edges_kernel"] = None  # as if it was never built
import numpy as np, medmask
from medmask.codecs import kernel_available
assert not kernel_available()
v1 = {str(fixtures)!r}
for name in ("edges2_uint8", "edges2_bool", "edges2_uint32", "edges2_plain"):
    path = f"{{v1}}/{{name}}.msk"
    mask = medmask.load_mask(path)
    with open(path, "rb") as f:
        raw = f.read()
    with medmask.MaskFile(path) as mf:
        chunks = mf.chunks
        committed = []
        for i in range(mf.descriptor.n_chunks):
            where = mf.chunk_byte_range(i)
            committed.append(b"" if where is None else raw[where[0] : where[1]])
    from medmask.format.encoding import encode_mask
    assert encode_mask(mask, chunks=chunks).streams == committed, name  # the same bytes
for old in ("edges_uint8", "edges_bool"):  # the first stream layout reads too
    assert medmask.load_mask(f"{{v1}}/{{old}}.msk").data.any()
with medmask.MaskArchive(f"{{v1}}/archive_edges2.mska") as a:
    assert len(a.read_all_masks()) == 4
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_parallel_decode_after_fork(tmp_path: object) -> None:
    """The chunk-decoding threads of a parent do not exist in a forked child: the child must
    start its own (a stale pool would hang)."""
    import multiprocessing
    from pathlib import Path

    import medmask

    path = Path(str(tmp_path)) / "big.msk"
    array = label_volume((64, 256, 256), np.uint8, seed=9)  # > 2 MB: decoded in parallel
    names = {f"v{v}": int(v) for v in np.unique(array) if v}
    medmask.save_mask(medmask.SegmentationMask(array, names), path, chunks=8)
    assert medmask.load_mask(path).data.sum() == array.sum()  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_checksum, (str(path),))
        assert result.get(timeout=60) == int(array.sum())


def _checksum(path: str) -> int:
    import medmask

    return int(medmask.load_mask(path).data.sum())
