"""Codec-level refusals, on every codec and both edges decoders: zero-size arrays decode only
from mode 0, signed streams never decode to negative values, a section is exactly one zstd
frame, an edge must change the value, and every refusal is a CodecError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import edges_stream, label_volume, varint

from medmask.codecs import BinaryCodec, EdgesCodec, LabelCodec, decode
from medmask.codecs import _edges as edges
from medmask.errors import CodecError


def edges_sections(k: int, w: int, p: int, raws: list[bytes], stored: list[bytes]) -> bytes:
    pairs = b"".join(varint(len(s)) + varint(len(r)) for s, r in zip(stored, raws, strict=True))
    return bytes([k, w, p]) + pairs + b"".join(stored)


def relabel(data: bytes, dtype_code: int) -> bytes:
    """A version-2 edges stream with another dtype code (CRC-32 recomputed)."""
    at = 8 + 4 * data[6]
    head = data[:5] + bytes([dtype_code]) + data[6:at]
    rest = data[at + 4 :]
    return head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest


def relabel_runs(data: bytes, dtype_code: int) -> bytes:
    """A labels/binary stream with another dtype code (header CRC-32 recomputed)."""
    h0 = 8 + 4 * data[6]
    end = h0 + 46
    head = data[:5] + bytes([dtype_code]) + data[6:end]
    return head + struct.pack("<I", zlib.crc32(head)) + data[end + 4 :]


# --- zero-size arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [1, 2])
def test_zero_size_edges_streams_decode_only_from_mode_0(path: str, mode: int) -> None:
    shape = (0, 3, 4)
    rest = edges_sections(1, 1, 1, [b""] * 7, [b""] * 7) if mode == 1 else varint(0) + varint(0)
    with pytest.raises(CodecError, match="zero-size"):
        EdgesCodec().decode(edges_stream(shape, mode, rest))
    empty = EdgesCodec().encode(np.zeros(shape, np.uint8))
    assert empty[7] == edges.MODE_CONSTANT
    assert EdgesCodec().decode(empty).shape == shape


@pytest.mark.parametrize("codec", [LabelCodec(), BinaryCodec()], ids=["labels", "binary"])
def test_zero_size_run_streams_decode_only_from_mode_0(codec: LabelCodec | BinaryCodec) -> None:
    shape = (2, 0, 5)
    good = codec.encode(np.zeros(shape, np.uint8))
    assert good[7] == 0
    assert codec.decode(good).shape == shape
    h0 = 8 + 4 * 3
    frame = zstd.ZstdCompressor(write_checksum=True, write_content_size=True).compress(b"")
    fields = struct.pack("<BBIQQ", 0, 1, 0, 0, 0) + struct.pack("<3Q", len(frame), 0, 0)
    head = good[:7] + bytes([2]) + good[8:h0] + fields
    plain = head + struct.pack("<I", zlib.crc32(head)) + frame
    with pytest.raises(CodecError, match="zero-size"):
        codec.decode(plain)


# --- signed streams -------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "itemsize"), [(6, 1), (7, 2), (8, 4), (9, 8)])
def test_signed_edges_streams_never_decode_negative(path: str, code: int, itemsize: int) -> None:
    top = (1 << (8 * itemsize)) - 1
    unsigned = np.zeros((4, 16, 64), f"u{itemsize}")
    unsigned[:, 3:9, 5:39] = top  # -1 if read as signed
    unsigned[:, 10:12, 3:40] = 7
    data = EdgesCodec().encode(unsigned)
    assert data[7] == edges.MODE_EDGES
    with pytest.raises(CodecError, match="fit the dtype"):
        EdgesCodec().decode(relabel(data, code))
    signed_max = np.zeros_like(unsigned)
    signed_max[:, 3:9, 5:39] = top >> 1  # the largest signed value reads
    got = EdgesCodec().decode(relabel(EdgesCodec().encode(signed_max), code))
    assert got.dtype == np.dtype(f"i{itemsize}")
    assert int(got.min()) == 0
    assert int(got.max()) == top >> 1


@pytest.mark.parametrize(("code", "itemsize"), [(6, 1), (7, 2), (8, 4), (9, 8)])
def test_signed_plain_and_constant_edges_streams(path: str, code: int, itemsize: int) -> None:
    top = (1 << (8 * itemsize)) - 1
    noise = np.random.default_rng(1).integers(0, 1 << 7, (4, 16, 16)).astype(f"u{itemsize}")
    noise[0, 0, 0] = top
    data = EdgesCodec().encode(noise)
    assert data[7] == edges.MODE_PLAIN
    with pytest.raises(CodecError, match="never negative"):
        EdgesCodec().decode(relabel(data, code))
    noise[0, 0, 0] = top >> 1
    got = EdgesCodec().decode(relabel(EdgesCodec().encode(noise), code))
    np.testing.assert_array_equal(got, noise.astype(f"i{itemsize}"))
    constant = EdgesCodec().encode(np.full((2, 3), top, f"u{itemsize}"))
    assert constant[7] == edges.MODE_CONSTANT
    with pytest.raises(CodecError, match="constant value"):
        EdgesCodec().decode(relabel(constant, code))


@pytest.mark.parametrize(("code", "itemsize"), [(6, 1), (7, 2), (8, 4), (9, 8)])
def test_signed_label_streams_never_decode_negative(code: int, itemsize: int) -> None:
    top = (1 << (8 * itemsize)) - 1
    vol = (label_volume((4, 9, 12), np.uint8, seed=2) % 100).astype(f"u{itemsize}")
    noise = np.random.default_rng(2).integers(0, 100, (3, 8, 8)).astype(f"u{itemsize}")
    xor = np.zeros((6, 4, 40), f"u{itemsize}")
    xor[1:4, 1:3, 5:30] = top  # XOR runs: the output holds the maximum
    # runs of 4: more runs than the decoder expands at once (checked after a run-by-run fill)
    many = np.repeat(np.random.default_rng(3).integers(1, 100, 1024), 4).reshape(4, 32, 32)
    many = many.astype(f"u{itemsize}")
    for array in (vol, noise, xor, many, np.full((2, 3), top >> 3, f"u{itemsize}")):
        for value, ok in ((top, False), (top >> 1, True)):
            a = array.copy()
            a[a == a.max()] = value
            data = relabel_runs(LabelCodec().encode(a), code)
            if ok:
                np.testing.assert_array_equal(LabelCodec().decode(data), a.astype(f"i{itemsize}"))
            else:
                with pytest.raises(CodecError, match="<= "):
                    LabelCodec().decode(data)


def test_signed_input_is_refused_when_negative() -> None:
    for codec in (EdgesCodec(), LabelCodec(), BinaryCodec()):
        with pytest.raises(CodecError, match="non-negative"):
            codec.encode(np.array([[0, -1, 2]], np.int16))


# --- one zstd frame per section -----------------------------------------------------------------


def test_an_edges_section_of_two_frames_is_refused(path: str) -> None:
    array = label_volume((6, 30, 40), np.uint8, seed=3)
    data = EdgesCodec().encode(array)
    assert data[7] == edges.MODE_EDGES
    h = edges._parse(memoryview(data), None, None)
    raws = []
    off = h.end
    for stored, raw in h.sections:
        piece = data[off : off + stored]
        raws.append(piece if stored == raw else zstd.ZstdDecompressor().decompress(piece))
        off += stored
    cctx = zstd.ZstdCompressor(write_content_size=True)
    fields = (h.k, h.value_width, h.position_width)
    ok = [cctx.compress(r) if r else b"" for r in raws]
    good = edges_stream(array.shape, 1, edges_sections(*fields, raws, ok))
    np.testing.assert_array_equal(EdgesCodec().decode(good), array)
    for extra in (cctx.compress(b"\x00\x00"), b"\x00", b"\x28\xb5\x2f\xfd"):
        twice = [ok[0] + extra, *ok[1:]]
        with pytest.raises(CodecError, match="exactly one zstd frame"):
            EdgesCodec().decode(edges_stream(array.shape, 1, edges_sections(*fields, raws, twice)))
    noise = np.random.default_rng(4).integers(0, 3, (3, 8, 8)).astype(np.uint8)
    plain = EdgesCodec().encode(noise)
    assert plain[7] == edges.MODE_PLAIN
    raw = noise.tobytes()
    body = cctx.compress(raw) + cctx.compress(b"")
    rest = varint(len(body)) + varint(len(raw)) + body
    with pytest.raises(CodecError, match="exactly one zstd frame"):
        EdgesCodec().decode(edges_stream(noise.shape, 2, rest))


@pytest.mark.parametrize("codec", [LabelCodec(), BinaryCodec()], ids=["labels", "binary"])
def test_a_run_section_of_two_frames_is_refused(codec: LabelCodec | BinaryCodec) -> None:
    array = label_volume((3, 8, 16), np.uint8, seed=5) > 0
    data = codec.encode(array)
    assert data[7] == 1
    h0 = 8 + 4 * 3
    sizes = list(struct.unpack_from("<3Q", data, h0 + 22))
    first = data[h0 + 50 : h0 + 50 + sizes[0]]
    extra = zstd.ZstdCompressor(write_checksum=True, write_content_size=True).compress(b"")
    sizes[0] += len(extra)
    head = data[: h0 + 22] + struct.pack("<3Q", *sizes)
    bad = head + struct.pack("<I", zlib.crc32(head)) + first + extra + data[h0 + 50 + len(first) :]
    with pytest.raises(CodecError, match="exactly one zstd frame"):
        codec.decode(bad)


# --- edges must change the value ------------------------------------------------------------------


_SAME = r"^Expected edges that change the value\. Got an edge equal to the value before it\.$"


def test_an_edge_equal_to_the_value_before_it_is_refused(path: str) -> None:
    """Row (0, 0) of a 1 x 1 x 6 uint8 array: insertions at x = 1 (value 4) and x = 3 (value 4
    again): not an edge by codecs.md 6.3, refused by 6.4."""
    raws = [bytes([2]), bytes([2, 2]), bytes([4, 4]), b"", b"", b"", b""]
    with pytest.raises(CodecError, match=_SAME):
        EdgesCodec().decode(edges_stream((1, 1, 6), 1, edges_sections(1, 1, 1, raws, raws)))
    raws = [bytes([1]), bytes([1]), bytes([0]), b"", b"", b"", b""]  # value 0 at x = 0
    with pytest.raises(CodecError, match=_SAME):
        EdgesCodec().decode(edges_stream((1, 1, 6), 1, edges_sections(1, 1, 1, raws, raws)))
    # a matched edge continuing one of value 4 right after an insertion of value 4: rows
    # (0, 0) = [0 4 4 4 4 4], (0, 1): insert x = 0 value 4, then fate 1 (x = 1, value 4)
    raws = [bytes([1, 1, 0]), bytes([2, 1]), bytes([4, 4]), b"", b"", b"", bytes([1])]
    with pytest.raises(CodecError, match=_SAME):
        EdgesCodec().decode(edges_stream((1, 2, 6), 1, edges_sections(1, 1, 1, raws, raws)))


def test_the_kind_byte_dispatch_refuses_with_codec_errors() -> None:
    with pytest.raises(CodecError):
        decode(b"MMC\x02\x09")


def test_running_out_of_memory_is_a_codec_error() -> None:
    """Under an address-space limit a valid stream too large to decode is a CodecError (a
    MedmaskError), on every codec, never a bare MemoryError; also when only the last step runs
    out (a uint64 binary stream: its 0/1 bytes fit, the uint64 array does not; a big-endian
    labels stream: its native array fits, the big-endian copy does not)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        from medmask.codecs import BinaryCodec, EdgesCodec, LabelCodec
        from medmask.errors import CodecError
        cases = [(c, np.uint8, (64, 4096, 4096)) for c in  # 1 GiB
                 (EdgesCodec(), LabelCodec(), BinaryCodec())]
        cases += [(BinaryCodec(), np.uint64, (1, 8192, 8192)),  # 64 MiB of bits, 512 MiB out
                  (LabelCodec(), ">u8", (1, 4096, 4096))]  # 128 MiB native, 128 MiB copy
        streams = [c.encode(np.ones((1, 4, 8), dtype)) for c, dtype, _ in cases]
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                  if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), vm + (256 << 20)))
        for (codec, _, shape), data in zip(cases, streams):
            big = data[:8] + np.array(shape, "<u4").tobytes() + data[20:]
            if data[4] == 3:  # edges: the CRC-32 after the shape covers it
                import zlib
                rest = big[24:]
                big = big[:20] + zlib.crc32(rest, zlib.crc32(big[:20])).to_bytes(4, "little") + rest
            else:
                import zlib
                end = 20 + 46
                big = big[:end] + zlib.crc32(big[:end]).to_bytes(4, "little") + big[end + 4:]
            try:
                codec.decode(big, shape=shape)
            except CodecError as exc:
                assert "out of memory" in str(exc), exc
            else:
                raise AssertionError(f"decoded {shape} under a 256 MiB limit")
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
