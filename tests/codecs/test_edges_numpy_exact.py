"""``medmask.edges`` on the numpy decoder, word for word: hand-built streams that reach each
refusal of the first-slice loop (``_scalar_rows``), the vectorised later slices
(``_vector_rows``), the gap reader of blocks of rows (``_Sections.take_gaps``: escapes, 255
bytes inside escapes, more escapes than one piece of 4,096) and the header parser, with the
exact CodecError text; the kernel must refuse the same streams (its own words where it reads
row by row). Plus valid streams the numpy decoder must read exactly: escaped gaps in later
slices, 4-byte positions, blocks of rows split in two (for their reference edges or
their insertions). And what is not an error: decode_into writes in place, one class buffer for
a single slice, the documented edges-or-plain rule at its boundaries."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import both_decoders, edges_stream, numpy_paths, varint

from medmask.codecs import EdgesCodec
from medmask.codecs import _edges as edges
from medmask.errors import CodecError

INSIDE = "Expected edges inside the row, each after the previous one. Got one outside."
MATCHED = "Expected matched edges inside the row, after the previous one. Got one outside."
INSERTED = "Expected inserted edges inside the row, after the previous one. Got one outside."
PER_VOXEL = "Expected at most one edge per voxel. Got more."
PER_GAP = "Expected a gap count per gap. Got the end of the gaps section."
GAP_END = "Expected a gap count. Got the end of the gaps section."
ESCAPE_CUT = "Expected 4 bytes after a 255 gap code. Got the end."
ESCAPE_SMALL = "Expected an escaped gap count >= 255. Got a smaller one."
POSITIONS = "Expected as many insertions as positions. Got more."


def mode1(
    shape: tuple[int, ...],
    gaps: bytes,
    positions: bytes = b"",
    values: bytes = b"",
    fates: dict[int, bytes] | None = None,
    *,
    k: int = 1,
    w: int = 1,
    p: int = 1,
    dtype_code: int = 2,
) -> bytes:
    """A mode-1 stream (docs/codecs.md 6.1) with raw sections: gaps, positions (``p`` byte
    planes), values (``w`` planes), then the 2K+2 fate sections (``fates`` by class)."""
    fates = fates or {}
    sections = [gaps, positions, values, *(fates.get(c, b"") for c in range(2 * k + 2))]
    table = b"".join(varint(len(s)) + varint(len(s)) for s in sections)
    return edges_stream(
        shape, 1, bytes([k, w, p]) + table + b"".join(sections), dtype_code=dtype_code
    )


def nibbles(codes: list[int]) -> bytes:
    """Fate codes two a byte, the first in the low nibble."""
    padded = codes + [0] * (len(codes) % 2)
    return bytes(a | b << 4 for a, b in zip(padded[0::2], padded[1::2], strict=True))


def escape(count: int) -> bytes:
    return b"\xff" + count.to_bytes(4, "little")


def numpy_refusal(data: bytes) -> str:
    with numpy_paths(), pytest.raises(CodecError) as info:
        EdgesCodec().decode(data)
    return str(info.value)


def kernel_refusal(data: bytes) -> str:
    """The default path's refusal (the kernel where built, else numpy again)."""
    with pytest.raises(CodecError) as info:
        EdgesCodec().decode(data)
    return str(info.value)


def assert_refused(data: bytes, numpy_message: str, kernel_message: str | None = None) -> None:
    """The numpy decoder refuses ``data`` with exactly ``numpy_message``; the kernel refuses it
    too, with ``kernel_message`` when given (where it reads row by row, its first error can be
    another one)."""
    assert numpy_refusal(data) == numpy_message
    got = kernel_refusal(data)
    if not edges.kernel_available():
        assert got == numpy_message
    elif kernel_message is not None:
        assert got == kernel_message


# --- the first slice, row by row (_scalar_rows) ------------------------------------------------


def _first_slice(codes: list[int], x1: int) -> bytes:
    """(1, 2, 4) uint8, K = 1: row 0 has edges (0, 1) and (x1, 2), both inserted (class 3);
    row 1 matches both with ``codes`` (class-3 fates)."""
    return mode1(
        (1, 2, 4),
        gaps=bytes([2, 0, 0, 0]),
        positions=bytes([1, x1]),
        values=bytes([1, 2]),
        fates={3: nibbles(codes)},
    )


def test_first_slice_hand_stream_decodes() -> None:
    np.testing.assert_array_equal(
        both_decoders(_first_slice([2, 1], 2)), [[[1, 1, 2, 2], [0, 1, 2, 2]]]
    )
    np.testing.assert_array_equal(both_decoders(_first_slice([1, 1], 3)), [[[1, 1, 1, 2]] * 2])


def test_first_slice_matched_edge_before_the_row_is_refused() -> None:
    """Row 1: the first edge moves 0 -> -1."""
    assert_refused(_first_slice([0, 1], 2), MATCHED, MATCHED)


def test_first_slice_matched_edge_at_x_equal_last_is_refused() -> None:
    """Row 1: the first edge moves 0 -> 1, the second 2 -> 1: the same x (``x <= last``)."""
    assert_refused(_first_slice([2, 0], 2), MATCHED, MATCHED)


def test_first_slice_matched_edge_at_x_equal_width_is_refused() -> None:
    """Row 1: the second edge moves 3 -> 4 = X (``x >= nx``)."""
    assert_refused(_first_slice([1, 2], 3), MATCHED, MATCHED)


@pytest.mark.parametrize(
    ("extra", "numpy_words"),
    [(3, MATCHED), (0, INSIDE)],
    ids=["rows wider than a block", "rows exactly a block wide"],
)
def test_wide_later_slice_matched_edge_outside_is_refused(extra: int, numpy_words: str) -> None:
    """A matched edge of a later slice moved to x = X. Rows wider than a block go through the
    scalar row loop; rows of exactly _BLOCK voxels still go through the vectorised blocks of
    rows, which refuse it in the blocks' words (the kernel reads row by row either way)."""
    nx = edges._BLOCK + extra
    data = mode1(
        (2, 1, nx),
        gaps=bytes([1, 0, 0]),
        positions=(nx).to_bytes(4, "little"),  # x = nx - 1
        values=bytes([5]),
        fates={3: nibbles([2])},  # moved to x = nx
        p=4,
    )
    assert_refused(data, numpy_words, MATCHED)


# --- later slices, blocks of rows (_vector_rows) -----------------------------------------------


def test_later_slice_more_insertions_than_voxels() -> None:
    """(2, 2, 4): slice 1 asks for 9 insertions in 8 voxels."""
    data = mode1((2, 2, 4), gaps=bytes([0, 0, 9, 0]), positions=bytes([1] * 9), w=0)
    assert_refused(data, PER_VOXEL, INSERTED)


def test_later_slice_more_edges_than_voxels() -> None:
    """(2, 1, 4), values toggled: slice 0 has edges at 0 and 1; slice 1 keeps both and inserts
    3 more after x = 1: 5 edges in 4 voxels (3 insertions fit the voxel count alone)."""
    data = mode1(
        (2, 1, 4), gaps=bytes([2, 0, 0, 3]), positions=bytes([1] * 5), fates={3: nibbles([1, 1])},
        w=0,
    )  # fmt: skip
    assert_refused(data, PER_VOXEL, INSERTED)
    ok = mode1(
        (2, 1, 4), gaps=bytes([2, 0, 0, 2]), positions=bytes([1] * 4), fates={3: nibbles([1, 1])},
        w=0,
    )  # fmt: skip
    np.testing.assert_array_equal(both_decoders(ok), [[[1, 0, 0, 0]], [[1, 0, 1, 0]]])


@pytest.mark.parametrize("where", ["matched", "inserted"])
def test_later_slice_edge_at_x_equal_width_is_refused(where: str) -> None:
    """(2, 2, 4): slice 0 row 1 has an edge at x = 3; in slice 1 it moves to x = 4, or an
    insertion lands there."""
    if where == "matched":
        data = mode1(
            (2, 2, 4), gaps=bytes([0, 1, 0, 0, 0]), positions=bytes([4]), values=bytes([7]),
            fates={3: nibbles([2])},
        )  # fmt: skip
        kernel = MATCHED
    else:
        data = mode1(
            (2, 2, 4), gaps=bytes([0, 1, 0, 0, 1]), positions=bytes([4, 1]), values=bytes([7, 3]),
            fates={3: nibbles([1])},
        )  # fmt: skip
        kernel = INSERTED
    assert_refused(data, INSIDE, kernel)


# --- gap counts of blocks of rows (_Sections.take_gaps) ------------------------------------------


def test_later_slice_short_gaps_without_escapes() -> None:
    data = mode1((2, 3, 8), gaps=bytes([0, 0, 0, 0, 0]))
    assert_refused(data, PER_GAP, GAP_END)


def test_later_slice_short_gaps_after_an_escape() -> None:
    data = mode1((2, 3, 300), gaps=bytes([0, 0, 0]) + escape(255) + b"\x00", w=0,
                 positions=bytes([1] * 255))  # fmt: skip
    assert_refused(data, PER_GAP, GAP_END)


def test_later_slice_escape_cut_short() -> None:
    data = mode1((2, 3, 8), gaps=bytes([0, 0, 0, 0, 0, 255, 1, 0]))
    assert_refused(data, ESCAPE_CUT, ESCAPE_CUT)


def test_later_slice_escape_below_255() -> None:
    data = mode1((2, 3, 8), gaps=bytes([0, 0, 0, 0, 0]) + escape(254))
    assert_refused(data, ESCAPE_SMALL, ESCAPE_SMALL)


def test_escape_of_65536_reads_its_third_byte() -> None:
    """(2, 4, 16384): slice 1 row 0 asks for 2**16 insertions (0xFF 00 00 01 00): as many as
    the block's voxels, so only the row width refuses them (not the voxel count, and not as a
    small escape)."""
    data = mode1(
        (2, 4, 16384), gaps=bytes([0, 0, 0, 0]) + escape(1 << 16) + bytes([0, 0, 0]),
        positions=bytes([1]) * (1 << 16), w=0,
    )  # fmt: skip
    assert_refused(data, INSIDE, INSERTED)


def test_escape_of_2_pow_24_reads_its_fourth_byte() -> None:
    """(2, 6, 512): slice 1 row 5 asks for 2**24 + 300 insertions: more than the block's
    voxels (its low bytes alone, 300, would fit them)."""
    data = mode1((2, 6, 512), gaps=bytes([0] * 11) + escape((1 << 24) + 300), w=0)
    assert_refused(data, PER_VOXEL, POSITIONS)


@pytest.mark.parametrize("n", [1639, 1700])
def test_thousands_of_escapes_in_one_block_short_by_one(n: int) -> None:
    """More than 2 x 4,096 bytes of 255 in one block's gap counts (escapes of 2**32 - 1, each
    5 bytes of 255, after one escape with a single 255): every escape's 4 bytes are data, so
    the section holds ``n + 1`` gaps for ``n + 2`` rows, whichever piece of 4,096 a 255 falls
    in."""
    rows = n + 2
    gaps = bytes(rows) + escape(256) + escape(2**32 - 1) * n
    assert_refused(mode1((2, rows, 8), gaps=gaps, w=0), PER_GAP)


def _escaped_volume() -> np.ndarray:
    """(2, 10, 1700) uint8, a reference edge (1100, 9) in every row; slice 1 inserts (before,
    after) that edge: gap counts of 255 (0xFF FF 00 00 00: a 255 inside the escape), 256, 300,
    511 (0xFF FF 01 00 00), 512, two escapes in one row, rows without escapes between."""
    a = np.zeros((2, 10, 1700), np.uint8)
    a[:, :, 1100:] = 9
    runs = {0: (255, 0), 1: (254, 0), 2: (256, 255), 4: (300, 0), 5: (511, 0), 6: (512, 510),
            8: (255, 255)}  # fmt: skip
    for y, (before, after) in runs.items():
        if before:  # ``before`` edges: alternating 1, 2, then back to 0
            a[1, y, : before - 1] = np.arange(before - 1) % 2 + 1
        if after:  # ``after`` edges: alternating 3, 4, then back to 9
            a[1, y, 1101 : 1100 + after] = np.arange(after - 1) % 2 + 3
    return a


def test_escaped_gaps_in_a_later_slice_decode_on_the_numpy_path() -> None:
    a = _escaped_volume()
    gaps, *_ = edges._encode_python(a, edges.DEFAULT_SHIFT)
    for count in (255, 256, 300, 511, 512):
        assert escape(count) in gaps
    assert escape(255) + escape(255) in gaps or escape(255) + b"\x00" + escape(255) in gaps
    with numpy_paths():
        data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    if edges.kernel_available():
        assert EdgesCodec().encode(a) == data
    np.testing.assert_array_equal(both_decoders(data), a)


# --- blocks of rows split in two -----------------------------------------------------------------


def test_a_block_of_two_rows_with_more_edges_than_a_block_is_split() -> None:
    """(2, 2, 20000), an edge at every voxel: slice 1's block of 2 rows refers to 40,000
    edges (> 32,768), so it is decoded one row at a time."""
    row = ((np.arange(20000) + 1) % 2).astype(np.uint8)  # 1, 0, 1, 0, ...
    a = np.broadcast_to(row, (2, 2, 20000)).copy()
    a[1, 1, 5:9] = [1, 0, 1, 0]  # a few moves in slice 1
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    np.testing.assert_array_equal(both_decoders(data), a)


# --- the header (_parse) -------------------------------------------------------------------------


def test_exactly_the_three_edge_fields_then_nothing() -> None:
    data = edges_stream((8,), 1, bytes([1, 1, 1]))
    assert kernel_refusal(data) == "Expected a complete section 0 size. Got the end of the header."
    data = edges_stream((8,), 1, bytes([1, 1]))
    assert kernel_refusal(data) == (
        "Expected the medmask.edges edge fields. Got the end of the stream."
    )


def test_a_plain_stream_without_its_section_size() -> None:
    data = edges_stream((8,), 2, b"")
    assert kernel_refusal(data) == "Expected a complete section size. Got the end of the header."


def test_stream_size_refusal_counts_the_sections() -> None:
    sections = [bytes([0, 0]), b"", b"", b"", b"", b"", b""]  # gaps: 2 bytes declared
    table = b"".join(varint(len(s)) * 2 for s in sections)
    fields = bytes([1, 1, 1]) + table
    data = edges_stream((2, 1, 4), 1, fields + bytes([0, 0, 0]))  # one byte too many
    head = 8 + 3 * 4 + 4
    assert kernel_refusal(data) == (
        f"Expected a medmask.edges stream of {head + len(fields) + 2 + 4} bytes. "
        f"Got {head + len(fields) + 3} bytes."
    )


def test_a_version_1_header_shorter_than_its_shape() -> None:
    """Version 1 (CRC-32 at the end): a 3-D prefix, one shape field and the CRC-32."""
    body = b"MMC" + bytes([1, 3, 2, 3, 1]) + struct.pack("<I", 4)
    data = body + struct.pack("<I", zlib.crc32(body))
    assert len(data) == 16
    assert kernel_refusal(data) == "Expected a medmask.edges header of at least 20 bytes. Got 12."


@pytest.mark.parametrize("p", [1, 2, 4])
def test_every_position_width_decodes(p: int) -> None:
    """(1, 1, 6) uint8 with K = 1: edges (1, 4) and (4, 9), positions as ``p`` byte planes."""
    deltas = np.array([2, 3], "<u8").view(np.uint8).reshape(2, 8)[:, :p].T.tobytes()
    data = mode1((1, 1, 6), gaps=bytes([2]), positions=deltas, values=bytes([4, 9]), p=p)
    np.testing.assert_array_equal(both_decoders(data), [[[0, 4, 4, 4, 9, 9]]])


def test_the_encoder_writes_4_byte_positions() -> None:
    a = np.zeros((1, 2, 70000), np.uint8)
    a[0, 0, 0] = 1
    a[0, 0, 69999] = 2  # a delta of 69,999: 4 bytes
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    assert data[8 + 12 + 4 : 8 + 12 + 7] == bytes([6, 1, 4])  # K, w, p
    np.testing.assert_array_equal(both_decoders(data), a)


# --- the encoder -------------------------------------------------------------------------------


def test_an_empty_array_is_a_constant_0_stream() -> None:
    for path in (False, True):
        with numpy_paths(path):
            got = EdgesCodec().encode(np.zeros((0, 3), np.uint8))
        assert got == edges_stream((0, 3), 0, varint(0))


def test_compressed_sections_carry_no_zstd_checksum() -> None:
    a = np.zeros((4, 40, 60), np.uint8)
    for z in range(4):
        a[z, 5:35, 10 + z : 50 - z] = 3
        a[z, 10:20, 20:30] = 7
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    h = edges._parse(memoryview(data), None, None)
    off, frames = h.end, 0
    for stored, raw in h.sections:
        if stored and stored != raw:
            params = zstd.get_frame_parameters(data[off : off + stored])
            assert not params.has_checksum
            frames += 1
        off += stored
    assert frames


def test_a_plain_stream_cut_inside_its_section_sizes() -> None:
    """The stored size is there, the raw size is not."""
    data = edges_stream((8,), 2, varint(3))
    assert kernel_refusal(data) == "Expected a complete section size. Got the end of the header."


def test_a_constant_cut_inside_its_varint() -> None:
    """A continuation byte (0x80) and then the end: a truncated varint, not an IndexError."""
    for rest in (b"\x80", b"\xff\x80"):
        data = edges_stream((8,), 0, rest)
        assert kernel_refusal(data) == (
            "Expected a complete constant value. Got the end of the header."
        )


# --- rows exactly one block wide, and blocks of rows split for their insertions ------------------


def test_a_block_of_two_rows_with_too_many_insertions_is_split() -> None:
    """(2, 2, 32768), toggled values, K = 1. Slice 0: row 0 inserts 10,000 edges (x = 0, 2,
    4, ...), row 1 keeps them all. Slice 1 drops every reference edge and inserts 25,000
    edges (x = 0, 1, 2, ...) in each row: 20,000 reference edges and 50,000 insertions are
    more than 2 x 32,768 items, so the block of both rows is decoded one row at a time."""
    nx, n0, n1 = edges._BLOCK, 10_000, 25_000
    gaps = escape(n0) + bytes(n0 + 1) + (escape(n1) + bytes(n0)) * 2
    positions = bytes([1] + [2] * (n0 - 1) + [1] * (2 * n1))
    fates = {3: nibbles([1] * n0 + [3] * n0), 1: nibbles([3] * n0)}
    data = mode1((2, 2, nx), gaps=gaps, positions=positions, fates=fates, w=0)
    expected = np.zeros((2, 2, nx), np.uint8)
    expected[0, :, : 2 * n0] = np.arange(2 * n0) // 2 % 2 == 0
    expected[1, :, :n1] = np.arange(n1) % 2 == 0
    np.testing.assert_array_equal(both_decoders(data), expected)


# --- decode_into writes in place -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_decode_into_a_contiguous_out_allocates_no_copy(path: str) -> None:
    """``decode_into`` a C-contiguous ``out`` (also one with a size-1 axis of stride 0, as
    ``buffer[np.newaxis]`` gives) decodes in place: no array of the out's size is allocated
    on the way (numpy's allocations are traced). A size-1 axis lets no two elements meet."""
    a = np.zeros((16, 256, 256), np.uint8)
    for z in range(16):
        a[z, 40 + z : 200, 60 : 180 + z] = 3
    b = np.zeros((1, 1024, 1024), np.uint8)
    b[0, 100:900, 200:700] = 5
    for array, out in ((a, np.empty_like(a)), (b, np.empty(b.shape[1:], np.uint8)[None])):
        data = EdgesCodec().encode(array)
        assert data[7] == edges.MODE_EDGES
        tracemalloc.start()
        try:
            EdgesCodec().decode_into(data, out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(out, array)
        assert peak < out.nbytes // 2  # a copy alone would take out.nbytes


# --- edges or plain: the documented rule (docs/codecs.md 6.5) ------------------------------------


def test_an_edges_stream_of_exactly_an_eighth_stays_edges() -> None:
    """Mode 2 only when the edges stream is larger than an eighth of the array (and plain is
    smaller): (1, 7, 248) stripes 4 voxels wide, each row shifted, give an edges stream of
    exactly 1736 / 8 = 217 bytes; plain would be smaller, and is not written."""
    stripes = np.arange(248) // 4 % 2
    shifts = [141, 139, 194, 223, 49, 197, 209]
    a = np.stack([np.roll(stripes, s) for s in shifts]).astype(np.uint8)[None]
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    assert len(data) == a.nbytes // 8 == 217
    assert len(EdgesCodec()._plain(a, a.dtype)) < len(data)
    np.testing.assert_array_equal(both_decoders(data), a)


def test_a_plain_stream_as_long_as_the_edges_stream_is_not_chosen() -> None:
    """Plain replaces a large edges stream only when it is smaller: 296 random 0/1 voxels give
    edges and plain streams of 129 bytes each (more than 296 / 8): edges is kept."""
    bits = "30d1047842096e80004ac008100e11d1040bc1930570044c7862181502a0405c1d141040f3"
    a = np.unpackbits(np.frombuffer(bytes.fromhex(bits), np.uint8)).reshape(1, 1, 296)
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    assert len(data) == len(EdgesCodec()._plain(a, a.dtype)) == 129 > a.nbytes // 8
    np.testing.assert_array_equal(both_decoders(data), a)


def test_a_single_slice_stream_holds_one_class_buffer() -> None:
    """docs/codecs.md 6.4: one class byte per edge of the previous and the current slice, one
    slice's worth when Z = 1. A (1, 1024, 1024) stream declaring 2**20 positions (as many edges
    as voxels), its first insertion refused: the numpy decoder's traced peak is the output and
    one class buffer of 2**20 bytes, not two."""
    n = 1 << 20
    data = mode1((1, 1024, 1024), gaps=bytes([1]), positions=bytes(n), w=0)
    assert_refused(data, INSERTED)
    tracemalloc.start()
    try:
        numpy_refusal(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 2 * n < peak < 2 * n + n // 2
