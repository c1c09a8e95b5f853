"""``medmask.edges``, two implementations, one answer: the compiled kernel against the numpy
decoder, the kernel encoder against the Python encoder, on arrays hypothesis draws (first
slices with 1 to 4,096 edges a row, 1-sized dimensions, widths that are not multiples of 8,
every dtype and byte order, values up to the dtype's maximum) and on mutated streams (the same
array or both a CodecError). Plus the shapes that crashed the kernel, run in a child process
so that a crash fails the test instead of killing the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import label_volume, numpy_paths, varint
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medmask.codecs import EdgesCodec, peek_stream
from medmask.codecs import _edges as edges
from medmask.errors import CodecError, MedmaskError

DTYPES = [
    np.dtype(t)
    for t in (
        "?", "u1", "i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">u4", "<i4", ">i4",
        "<u8", ">u8", "<i8", ">i8",
    )
]  # fmt: skip


def outcome(data: bytes) -> tuple[str, object]:
    """("ok", array) or ("error", CodecError) of one decode; any other exception escapes."""
    try:
        return "ok", EdgesCodec().decode(data)
    except CodecError as exc:
        return "error", exc


def assert_same_answer(data: bytes) -> tuple[str, object]:
    fast = outcome(data)
    with numpy_paths():
        slow = outcome(data)
    assert isinstance(slow, tuple)
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "ok":
        a, b = fast[1], slow[1]
        assert isinstance(a, np.ndarray)
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    return fast


# a mutated shape field can declare gigabytes that a tiny stream validly fills (rows repeat the
# row above); comparing two such arrays costs more memory than CI has, so such inputs are
# left to the memory tests (test_edges_memory.py)
MAX_COMPARED_BYTES = 1 << 26


def small_enough(data: bytes) -> bool:
    """Whether the stream declares at most :data:`MAX_COMPARED_BYTES` of output (or has no
    readable prefix, which both paths must refuse)."""
    try:
        prefix = peek_stream(data)
    except CodecError:
        return True
    return int(np.prod(prefix.shape, dtype=np.uint64)) * prefix.dtype.itemsize <= MAX_COMPARED_BYTES


def vmax_of(dtype: np.dtype) -> int:
    if dtype.kind == "b":
        return 1
    return int(np.iinfo(dtype).max)


def drawn_array(
    seed: int, shape: tuple[int, int, int], dtype: np.dtype, edges_per_row: int, palette: int
) -> np.ndarray:
    """A volume whose first slice has about ``edges_per_row`` edges a row; later slices move
    the previous one's edges by a voxel or two and add a little noise (so that fates of every
    class, insertions and deletions all occur). Values include the dtype's maximum."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    top = vmax_of(dtype)
    fixed = np.array([0, 1, top, max(top - 1, 0)], dtype=np.uint64)
    drawn = rng.integers(0, top, palette, dtype=np.uint64, endpoint=True)
    values = np.unique(np.concatenate([fixed, drawn]))
    u = np.zeros(shape, dtype=np.uint64)
    n_edges = min(edges_per_row, nx)
    for y in range(ny):
        cuts = np.sort(rng.choice(nx, n_edges, replace=False))
        row = np.zeros(nx, dtype=np.uint64)
        for i, x in enumerate(cuts):
            row[x:] = values[rng.integers(0, values.size)] if i % 2 == 0 or top > 1 else 0
        if top == 1:  # alternate 0/1 so that every cut is an edge
            row = (np.searchsorted(cuts, np.arange(nx), side="right") % 2).astype(np.uint64)
        u[0, y] = row
    for z in range(1, nz):
        u[z] = np.roll(u[z - 1], int(rng.integers(-2, 3)), axis=-1)
        noise = rng.random((ny, nx)) < 0.02
        u[z][noise] = values[rng.integers(0, values.size, int(noise.sum()))]
    if dtype.kind == "b":
        return (u & 1).astype(bool)
    return u.astype(dtype)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    nz=st.sampled_from([1, 1, 2, 3]),
    ny=st.sampled_from([1, 2, 3, 7]),
    nx=st.sampled_from([1, 2, 7, 9, 63, 255, 1023, 4101, 8197]),
    dtype=st.sampled_from(DTYPES),
    edges_per_row=st.sampled_from([1, 2, 3, 34, 255, 1024, 2049, 4096]),
    palette=st.integers(0, 5),
    ndim=st.sampled_from([1, 2, 3]),
)
def test_kernel_and_numpy_agree_on_drawn_arrays(
    seed: int,
    nz: int,
    ny: int,
    nx: int,
    dtype: np.dtype,
    edges_per_row: int,
    palette: int,
    ndim: int,
) -> None:
    if ndim == 1:
        nz, ny = 1, 1
    elif ndim == 2:
        nz = 1
    assume(nz * ny * nx <= 60_000)  # numpy's first slice is a scalar loop
    array = drawn_array(seed, (nz, ny, nx), dtype, edges_per_row, palette)
    array = array.reshape(array.shape[3 - ndim :])
    fast = EdgesCodec(level=1).encode(array)
    with numpy_paths():
        slow = EdgesCodec(level=1).encode(array)
    assert fast == slow  # the kernel and the Python encoder write the same bytes
    kind, got = assert_same_answer(fast)
    assert kind == "ok"
    assert isinstance(got, np.ndarray)
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    values = EdgesCodec().decode_with_values(fast)[1]
    with numpy_paths():
        slow_values = EdgesCodec().decode_with_values(fast)[1]
    if values is not None:
        present = {int(v) for v in np.unique(array.astype(np.uint64))}
        assert present <= {int(v) for v in values}
        assert slow_values is not None
        np.testing.assert_array_equal(values, slow_values)


# --- mutated streams ----------------------------------------------------------------------------


def raw_sections(data: bytes) -> tuple[bytes, list[bytes], tuple[int, int, int]]:
    """A mode-1 stream as (prefix + shape, raw sections, (K, w, p))."""
    h = edges._parse(memoryview(data), None, None)
    off = h.end
    raws = []
    for stored, raw in h.sections:
        piece = data[off : off + stored]
        raws.append(piece if stored == raw else zstd.ZstdDecompressor().decompress(piece))
        off += stored
    at = 8 + 4 * data[6]
    return data[:at], raws, (h.k, h.value_width, h.position_width)


def assemble(head: bytes, raws: list[bytes], fields: tuple[int, int, int]) -> bytes:
    """A version-2 stream from raw sections (stored raw), with its CRC-32."""
    rest = bytes(fields) + b"".join(varint(len(r)) * 2 for r in raws) + b"".join(raws)
    return head + zlib.crc32(rest, zlib.crc32(head)).to_bytes(4, "little") + rest


def test_gaps_ending_after_an_escape_in_vectorised_rows() -> None:
    """Slice 1 (vectorised rows) reads its gap counts with an escaped one among them; a gaps
    section one byte short there is a CodecError on both paths."""
    a = np.zeros((2, 3, 600), np.uint8)
    a[1, 0, ::2] = 1  # 600 insertions in one row: an escaped gap count
    data = EdgesCodec().encode(a)
    assert data[7] == edges.MODE_EDGES
    head, raws, fields = raw_sections(data)
    assert raws[0][3] == 255  # slice 0: three gaps of 0, then slice 1's escape
    short = assemble(head, [raws[0][:-1], *raws[1:]], fields)
    kind, error = assert_same_answer(short)
    assert kind == "error"
    assert "gap count" in str(error)


def base_streams() -> list[bytes]:
    out = []
    for seed, shape, dtype in [
        (1, (3, 9, 40), np.uint8),
        (1, (2, 8, 33), np.uint16),
        (1, (1, 12, 70), np.bool_),
        (1, (4, 6, 17), np.uint32),
        (6, (3, 9, 40), np.uint8),
    ]:
        array = label_volume(shape, dtype, seed=seed, n=5)
        data = EdgesCodec(level=1).encode(array)
        assert data[7] == edges.MODE_EDGES
        out.append(data)
    return out


BASES = base_streams()


@settings(max_examples=400, deadline=None)
@given(
    which=st.integers(0, len(BASES) - 1),
    section=st.integers(0, 16),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sid")),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_sections_give_one_answer(
    which: int, section: int, edits: list[tuple[int, int, str]]
) -> None:
    """Raw sections edited (set, insert or delete a byte), the stream re-assembled with a valid
    CRC: both decoders give the same array or both a CodecError, nothing else."""
    head, raws, fields = raw_sections(BASES[which])
    i = section % len(raws)
    raw = bytearray(raws[i])
    for at, byte, how in edits:
        at = at % (len(raw) + 1)
        if how == "s" and at < len(raw):
            raw[at] = byte
        elif how == "i":
            raw[at:at] = bytes([byte])
        elif how == "d" and at < len(raw):
            del raw[at]
    raws[i] = bytes(raw)
    data = assemble(head, raws, fields)
    assume(small_enough(data))
    assert_same_answer(data)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(BASES) - 1),
    at=st.integers(0, 10_000),
    byte=st.integers(0, 255),
)
def test_mutated_stream_bytes_give_one_answer(which: int, at: int, byte: int) -> None:
    data = bytearray(BASES[which])
    at = 12 + at % (len(data) - 12)
    data[at] = byte
    crc_at = 8 + 4 * data[6]
    body = bytes(data[:crc_at]) + bytes(data[crc_at + 4 :])
    data[crc_at : crc_at + 4] = zlib.crc32(body).to_bytes(4, "little")
    assume(small_enough(bytes(data)))
    assert_same_answer(bytes(data))


# --- the shapes that crashed ----------------------------------------------------------------------


def run_child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (with the kernel unless ``env`` says otherwise)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MEDMASK_KERNEL": "1", **(env or {})},
    )


@pytest.mark.parametrize(
    "shape",
    [(1, 2048, 1100), (1, 2, 1024), (2, 700, 3000)],
    ids=["segfault", "false-error", "two-slices"],
)
def test_dense_first_slices_decode_in_a_child(shape: tuple[int, int, int]) -> None:
    """The kernel used to keep the reference row's edges in a buffer it reallocated mid-row:
    (1, 2048, 1100) was a segfault, (1, 2, 1024) a false CodecError."""
    proc = run_child(
        f"""
        import numpy as np
        from medmask.codecs import EdgesCodec
        a = np.zeros({shape}, np.uint8)
        a[..., ::2] = 1
        data = EdgesCodec().encode(a)
        assert data[7] == 1, data[7]
        assert np.array_equal(EdgesCodec().decode(data), a)
        print("ok")
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "ok"


def test_a_slice_with_five_labels_decodes_in_a_child() -> None:
    """The issue's 512 x 512 slice with five labels (about 34 edges a row), through a file."""
    proc = run_child(
        """
        import numpy as np, tempfile, os, medmask
        yy, xx = np.mgrid[:512, :512]
        a = np.zeros((1, 512, 512), np.uint8)
        for i, r in enumerate((240, 200, 150, 100, 50)):
            a[0][((yy - 256) ** 2 + ((xx - 256) % 31) ** 2 * 40 < r * r)] = i + 1
        a[0, :, ::15] = 0
        names = {f"l{v}": int(v) for v in np.unique(a) if v}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.msk")
            medmask.save_mask(medmask.SegmentationMask(a, names), path)
            for _ in range(20):
                assert np.array_equal(medmask.load_mask(path).data, a)
        print("ok")
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


def test_medmask_kernel_0_forces_the_numpy_paths() -> None:
    proc = run_child(
        """
        import sys
        import numpy as np
        from medmask.codecs import EdgesCodec, kernel_available
        from medmask.codecs import _edges
        assert not kernel_available()
        assert _edges._kernel is None
        assert "medmask.codecs._edges_kernel" not in sys.modules
        a = np.zeros((2, 30, 40), np.uint16)
        a[:, 5:20, 7:33] = 300
        data = EdgesCodec().encode(a)
        assert np.array_equal(EdgesCodec().decode(data), a)
        assert "medmask.codecs._edges_kernel" not in sys.modules
        print("ok")
        """,
        env={"MEDMASK_KERNEL": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_without_medmask_kernel_0_the_kernel_is_used() -> None:
    proc = run_child(
        """
        import importlib, sys
        from medmask.codecs import kernel_available
        try:
            importlib.import_module("medmask.codecs._edges_kernel")
            built = True
        except ImportError:
            built = False
        assert kernel_available() == built
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_refusal_is_a_medmask_error() -> None:
    assert issubclass(CodecError, MedmaskError)


@pytest.mark.parametrize("case", ["dense-reference", "dense-insertions"])
def test_blocks_of_rows_with_many_edges(case: str) -> None:
    """The numpy decoder halves a block of rows while it holds too many reference edges (or,
    after reading its gap counts, insertions): the same array as the kernel either way."""
    array = np.zeros((3, 80, 1024), np.uint8)
    if case == "dense-reference":
        array[..., ::2] = 1
    else:
        array[1:, :, ::2] = 1  # slice 1: 81,920 insertions against empty rows
    data = EdgesCodec(level=1).encode(array)
    assert data[7] == edges.MODE_EDGES
    kind, got = assert_same_answer(data)
    assert kind == "ok"
    np.testing.assert_array_equal(got, array)  # type: ignore[arg-type]
