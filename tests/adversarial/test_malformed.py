"""Malformed, truncated, corrupted and hostile ``.msk`` files: medmask's own clear errors.

Malformed files are built from a valid file's bytes by surgery: :func:`split` takes a file
apart, :func:`repack` puts it back together with fresh offsets and CRCs (or deliberately stale
ones), so each case breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import SegmentationMask, load_mask, read_info, save_mask
from medmask.format.container import (
    FLAG_METADATA_ZSTD,
    HEADER_SIZE,
    INDEX_DTYPE,
    MAGIC_MSK,
    MAGIC_MSKA,
    Header,
    decode_metadata,
)

# --- a valid multi-chunk file and surgery helpers ----------------------------------------------

SHAPE = (12, 20, 16)
CHUNKS = (3, 10, 16)  # grid (4, 2, 1): 8 chunks


def label_volume(shape: tuple[int, int, int], n_labels: int, seed: int) -> np.ndarray:
    """Label-structured volume: random boxes of labels 1..n_labels on background."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=np.uint8)
    for label in range(1, n_labels + 1):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape, strict=True)]
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    noise = rng.random(shape) < 0.03
    out[noise] = rng.integers(1, n_labels + 1, size=int(noise.sum()))
    return out


def make_mask(n_labels: int = 4, seed: int = 0, long_names: bool = False) -> SegmentationMask:
    data = label_volume(SHAPE, n_labels, seed)
    data[0:3, 0:10, :] = 0  # chunk 0 is all zero: exercises the length-0 index entry
    prefix = "structure_with_a_rather_long_descriptive_name_" if long_names else "organ_"
    mapping = {f"{prefix}{i}": i for i in range(1, n_labels + 1)}
    space = Space(shape=SHAPE, origin=(-10.5, 20.25, 3.0), spacing=(2.5, 0.8, 0.8))
    return SegmentationMask(data, mapping, space)


def msk_bytes(mask: SegmentationMask, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    save_mask(mask, buf, **{"chunks": CHUNKS, **kwargs})
    return buf.getvalue()


@dataclass
class Parts:
    header: Header
    metadata: bytes  # as stored
    index: np.ndarray  # INDEX_DTYPE, writable copy
    payload: bytes  # everything after the index

    @property
    def payload_start(self) -> int:
        return self.header.index_offset + self.header.index_length

    def metadata_json(self) -> dict[str, Any]:
        return decode_metadata(self.metadata, self.header, name="x")

    def stream(self, chunk_id: int) -> bytes:
        entry = self.index[chunk_id]
        start = int(entry["offset"]) - self.payload_start
        return self.payload[start : start + int(entry["length"])]


def split(data: bytes) -> Parts:
    header = Header.parse(data, magic=MAGIC_MSK, name="x")
    # the writer's layout, which the surgery below relies on
    assert header.metadata_offset == HEADER_SIZE
    assert header.index_offset == HEADER_SIZE + header.metadata_length
    meta = data[header.metadata_offset : header.metadata_offset + header.metadata_length]
    index_end = header.index_offset + header.index_length
    index = np.frombuffer(data[header.index_offset : index_end], dtype=INDEX_DTYPE).copy()
    return Parts(header, meta, index, data[index_end:])


def repack(
    parts: Parts,
    *,
    metadata: dict[str, Any] | bytes | None = None,
    index: np.ndarray | None = None,
    payload: bytes | None = None,
    shift_offsets: bool = True,
    **header_fields: Any,
) -> bytes:
    """Re-assemble a file with fresh offsets and CRCs; ``header_fields`` override last."""
    flags = parts.header.required_flags
    if metadata is None:
        meta = parts.metadata
    elif isinstance(metadata, dict):
        meta = json.dumps(metadata).encode()
        flags &= ~FLAG_METADATA_ZSTD
    else:
        meta = metadata
    entries = (parts.index if index is None else index).copy()
    index_offset = HEADER_SIZE + len(meta)
    payload_start = index_offset + len(entries) * INDEX_DTYPE.itemsize
    if shift_offsets:
        stored = entries["length"] > 0
        delta = payload_start - parts.payload_start
        entries["offset"][stored] = (entries["offset"][stored].astype(np.int64) + delta).astype(
            np.uint64
        )
    index_bytes = entries.tobytes()
    header = dataclasses.replace(
        parts.header,
        metadata_offset=HEADER_SIZE,
        metadata_length=len(meta),
        metadata_crc=zlib.crc32(meta),
        index_offset=index_offset,
        index_count=len(entries),
        index_crc=zlib.crc32(index_bytes),
        required_flags=flags,
    )
    header = dataclasses.replace(header, **header_fields)
    body = parts.payload if payload is None else payload
    return header.pack() + meta + index_bytes + body


def with_metadata(data: bytes, **changes: Any) -> bytes:
    """Re-pack ``data`` with top-level metadata keys replaced (``None`` deletes a key)."""
    parts = split(data)
    meta = parts.metadata_json()
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    return repack(parts, metadata=meta)


@pytest.fixture(scope="module")
def mask() -> SegmentationMask:
    return make_mask()


@pytest.fixture(scope="module")
def valid(mask: SegmentationMask) -> bytes:
    return msk_bytes(mask)


def write(tmp_path: Path, data: bytes, name: str = "case.msk") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def raises_named(
    error: type[BaseException], path: Path, problem: str, **load_kwargs: Any
) -> BaseException:
    """``load_mask(path)`` raises ``error`` whose message names the file, then the problem."""
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + problem) as info:
        load_mask(path, **load_kwargs)
    assert isinstance(info.value, medmask.MedmaskError)
    # ... and the matching builtin, as errors.py documents
    assert isinstance(info.value, ValueError | KeyError | FileNotFoundError)
    return info.value


def test_surgery_helpers_are_lossless(valid: bytes, mask: SegmentationMask) -> None:
    parts = split(valid)
    assert repack(parts) == valid
    assert parts.index["length"][0] == 0  # chunk 0 all zero
    assert (parts.index["length"][1:] > 0).all()
    reordered = repack(parts, metadata=parts.metadata_json())  # plain JSON, new offsets
    assert load_mask(io.BytesIO(reordered)) == mask


# --- the first bytes ---------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    err = raises_named(medmask.TruncatedFileError, path, "0 bytes, too short")
    assert isinstance(err, ValueError)


def test_shorter_than_magic(tmp_path: Path) -> None:
    path = write(tmp_path, MAGIC_MSK[:5])
    raises_named(medmask.TruncatedFileError, path, "5 bytes, too short for a .msk file header")


def test_random_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, np.random.default_rng(7).bytes(500))
    err = raises_named(medmask.FormatError, path, r"not a \.msk file: starts with unknown bytes")
    assert not isinstance(err, medmask.TruncatedFileError | medmask.ChecksumError)


def test_gzip_file_given_as_msk(tmp_path: Path, shared_data: Path) -> None:
    nii = (shared_data / "totalseg" / "organs" / "liver.nii.gz").read_bytes()
    path = write(tmp_path, nii, "liver.msk")
    raises_named(medmask.FormatError, path, r"gzip file \(a \.nii\.gz\?\)")
    small = write(tmp_path, gzip.compress(b"hello" * 100), "small.msk")
    raises_named(medmask.FormatError, small, "gzip")


def test_npz_given_as_msk(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(3))
    path = write(tmp_path, buf.getvalue(), "arr.msk")
    raises_named(medmask.FormatError, path, r"zip file \(an \.npz\?\)")


def test_medmask_01_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"MSK1" + bytes(200), "old.msk")
    raises_named(medmask.FormatError, path, r"medmask 0\.1 \.msk file")


def test_mska_given_to_load_mask(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, MAGIC_MSKA + valid[8:], "archive.mska")
    raises_named(medmask.FormatError, path, r"not a \.msk file: starts with a \.mska archive")


def test_text_mode_transfer_is_detected(tmp_path: Path, valid: bytes) -> None:
    # \r\n -> \n (a text-mode FTP transfer): the magic no longer matches
    path = write(tmp_path, valid.replace(b"\r\n", b"\n"))
    raises_named(medmask.FormatError, path, r"not a \.msk file")


# --- header ------------------------------------------------------------------------------------


def test_truncated_header(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, valid[:40])
    raises_named(medmask.TruncatedFileError, path, "ends inside the 64-byte header")


def test_header_crc_mismatch(tmp_path: Path, valid: bytes) -> None:
    data = bytearray(valid)
    data[30] ^= 0x01  # metadata offset
    path = write(tmp_path, bytes(data))
    err = raises_named(medmask.ChecksumError, path, "header checksum mismatch")
    assert isinstance(err, medmask.FormatError)


def test_unsupported_major_version(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, repack(split(valid), major=2))
    err = raises_named(medmask.UnsupportedVersionError, path, "format version 2.0 is not supported")
    assert isinstance(err, ValueError)
    with pytest.raises(medmask.UnsupportedVersionError):
        read_info(path)


def test_higher_minor_version_and_unknown_optional_flags_are_read(
    tmp_path: Path, valid: bytes, mask: SegmentationMask
) -> None:
    path = write(tmp_path, repack(split(valid), minor=7, optional_flags=0xFFFF_FFFF))
    assert load_mask(path) == mask


def test_unknown_required_flag(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, repack(split(valid), required_flags=1 << 5))
    raises_named(medmask.UnsupportedVersionError, path, r"flags 0x20")


def test_header_points_into_itself(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    path = write(tmp_path, repack(parts, index_offset=10))
    raises_named(medmask.FormatError, path, "header points into itself")


def test_metadata_length_over_limit(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, repack(split(valid), metadata_length=(64 << 20) + 1))
    raises_named(medmask.FormatError, path, "exceeds the 67108864-byte limit")


# --- metadata ----------------------------------------------------------------------------------


def test_truncated_metadata(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    path = write(tmp_path, valid[: HEADER_SIZE + len(parts.metadata) // 2])
    raises_named(medmask.TruncatedFileError, path, "ends inside the metadata")


def test_metadata_offset_past_end(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, repack(split(valid), metadata_offset=1 << 62))
    raises_named(medmask.TruncatedFileError, path, "ends inside the metadata")


def test_metadata_crc_mismatch(tmp_path: Path, valid: bytes) -> None:
    data = bytearray(valid)
    data[HEADER_SIZE + 5] ^= 0x40
    path = write(tmp_path, bytes(data))
    raises_named(medmask.ChecksumError, path, "metadata checksum mismatch")


@pytest.mark.parametrize(
    ("raw", "flags", "problem"),
    [
        (b'{"shape": [1, 2', 0, "metadata is not valid UTF-8 JSON"),
        (b"\xff\xfe{}", 0, "metadata is not valid UTF-8 JSON"),
        (b"{}" * 3, 0, "metadata is not valid UTF-8 JSON"),
        (b"NaN-ish garbage", FLAG_METADATA_ZSTD, "compressed metadata cannot be decompressed"),
    ],
    ids=["cut-json", "not-utf8", "trailing", "bad-zstd"],
)
def test_metadata_not_json(
    tmp_path: Path, valid: bytes, raw: bytes, flags: int, problem: str
) -> None:
    path = write(tmp_path, repack(split(valid), metadata=raw, required_flags=flags))
    raises_named(medmask.FormatError, path, problem)


@pytest.mark.parametrize("value", [[1, 2, 3], "text", 42, None])
def test_metadata_json_not_an_object(tmp_path: Path, valid: bytes, value: object) -> None:
    path = write(tmp_path, repack(split(valid), metadata=json.dumps(value).encode()))
    raises_named(medmask.FormatError, path, "metadata must be a JSON object")


def _bad_label(meta: dict[str, Any], **item: Any) -> dict[str, Any]:
    labels = [dict(e) for e in meta["labels"]]
    labels[1].update(item)
    return {"labels": labels}


_METADATA_CASES: dict[str, tuple[Any, str]] = {
    "shape missing": (lambda m: {"shape": None}, "expected shape as 3 integers"),
    "shape negative": (lambda m: {"shape": [12, -20, 16]}, "expected shape as 3 integers >= 1"),
    "shape zero": (lambda m: {"shape": [12, 0, 16]}, "expected shape as 3 integers >= 1"),
    "shape 2-D": (lambda m: {"shape": [12, 20]}, "expected shape as 3 integers"),
    "shape floats": (lambda m: {"shape": [12.0, 20, 16]}, "expected shape as 3 integers"),
    "shape bools": (lambda m: {"shape": [True, 20, 16]}, "expected shape as 3 integers"),
    "axes": (lambda m: {"axes": "xyz"}, "expected axes 'zyx'"),
    "bit_depth 7": (lambda m: {"bit_depth": 7}, r"expected bit_depth in \(1, 8, 16, 32\), got 7"),
    "bit_depth str": (lambda m: {"bit_depth": "8"}, "expected bit_depth in"),
    "bit_depth missing": (lambda m: {"bit_depth": None}, "expected bit_depth in"),
    "dtype mismatch": (lambda m: {"dtype": "uint16"}, "dtype 'uint16' does not match bit depth 8"),
    "dtype unknown": (lambda m: {"dtype": "float32"}, "dtype 'float32' does not match"),
    "space missing": (lambda m: {"space": None}, "missing 'space'"),
    "space not object": (lambda m: {"space": [1, 2, 3]}, "expected the space as an object"),
    "space system": (
        lambda m: {"space": {**m["space"], "coordinate_system": "RAS"}},
        "expected coordinate_system 'LPS'",
    ),
    "space spacing negative": (
        lambda m: {"space": {**m["space"], "spacing": [1.0, -1.0, 1.0]}},
        "expected positive spacing",
    ),
    "space origin nan": (
        lambda m: {"space": {**m["space"], "origin": [0.0, "x", 1.0]}},
        "expected origin as 3 finite numbers",
    ),
    "space shape differs": (
        lambda m: {"space": {**m["space"], "shape": [12, 20, 17]}},
        r"space shape \(12, 20, 17\) differs from shape \(12, 20, 16\)",
    ),
    "space orientation degenerate": (
        lambda m: {"space": {**m["space"], "y_orientation": m["space"]["x_orientation"]}},
        "invalid space",
    ),
    "labels not list": (lambda m: {"labels": {"a": 1}}, "expected 'labels' as a list"),
    "label not object": (lambda m: {"labels": ["liver"]}, "expected each label as an object"),
    "duplicate label names": (
        lambda m: _bad_label(m, name=m["labels"][0]["name"]),
        "label names must be unique non-empty strings",
    ),
    "empty label name": (lambda m: _bad_label(m, name=" "), "label names must be unique"),
    "duplicate label values": (
        lambda m: _bad_label(m, value=m["labels"][0]["value"]),
        "label value 1 is used twice",
    ),
    "label value too big": (lambda m: _bad_label(m, value=256), r"outside \[0, 255\]"),
    "label count too big": (lambda m: _bad_label(m, count=10**9), "invalid voxel count"),
    "label bbox outside": (
        lambda m: _bad_label(m, bbox=[[0, 12], [0, 1], [0, 1]]),
        "invalid bbox",
    ),
    "label bbox reversed": (lambda m: _bad_label(m, bbox=[[3, 2], [0, 1], [0, 1]]), "invalid bbox"),
    "codec missing": (lambda m: {"codec": None}, "expected codec as an object with an 'id'"),
    "codec no id": (lambda m: {"codec": {"level": 3}}, "expected codec as an object with an 'id'"),
    "chunks zero": (lambda m: {"chunks": [0, 10, 16]}, "expected chunks as 3 integers >= 1"),
    "chunks missing": (lambda m: {"chunks": None}, "expected chunks as 3 integers"),
    "attributes not object": (lambda m: {"attributes": [1]}, "expected 'attributes' to be an obj"),
}


@pytest.mark.parametrize("case", list(_METADATA_CASES))
def test_metadata_missing_keys_and_wrong_types(tmp_path: Path, valid: bytes, case: str) -> None:
    change, problem = _METADATA_CASES[case]
    parts = split(valid)
    data = with_metadata(valid, **change(parts.metadata_json()))
    path = write(tmp_path, data)
    err = raises_named(medmask.FormatError, path, "invalid metadata: .*" + problem)
    assert isinstance(err, ValueError)
    with pytest.raises(medmask.FormatError, match=problem):
        read_info(path)


def test_unknown_metadata_keys_are_ignored(
    tmp_path: Path, valid: bytes, mask: SegmentationMask
) -> None:
    path = write(tmp_path, with_metadata(valid, future_key={"x": [1, 2]}, format="medmask.msk"))
    assert load_mask(path) == mask


def test_unknown_codec_fails_on_decode_but_metadata_reads(tmp_path: Path, valid: bytes) -> None:
    path = write(tmp_path, with_metadata(valid, codec={"id": "medmask.future", "level": 3}))
    info = read_info(path)
    assert info.codec["id"] == "medmask.future"
    assert info.shape == SHAPE
    raises_named(medmask.FormatError, path, "cannot decode: .*medmask.future")


# --- chunk index -------------------------------------------------------------------------------


def test_truncated_index(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    path = write(tmp_path, valid[: parts.header.index_offset + 30])
    raises_named(medmask.TruncatedFileError, path, "ends inside the chunk index")


def test_index_crc_mismatch(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    data = bytearray(valid)
    data[parts.header.index_offset + 3 * 24 + 8] ^= 0x02  # chunk 3's length
    path = write(tmp_path, bytes(data))
    raises_named(medmask.ChecksumError, path, "chunk index checksum mismatch")


@pytest.mark.parametrize("count", [0, 7, 9, 16])
def test_index_count_not_matching_grid(tmp_path: Path, valid: bytes, count: int) -> None:
    parts = split(valid)
    index = np.zeros(count, dtype=INDEX_DTYPE)
    index[: min(count, 8)] = parts.index[: min(count, 8)]
    path = write(tmp_path, repack(parts, index=index))
    raises_named(
        medmask.FormatError, path, rf"chunk index has {count} entries but the chunk grid .* needs 8"
    )


@pytest.mark.parametrize(
    ("offset", "length"),
    [(10_000, 50), (1 << 40, 50), (1 << 63, 50), (None, 1 << 40), (None, (1 << 64) - 1)],
    ids=["past-end", "far-past-end", "2^63", "huge-length", "wrapping-length"],
)
def test_index_entry_past_end_of_file(
    tmp_path: Path, valid: bytes, offset: int | None, length: int
) -> None:
    parts = split(valid)
    index = parts.index.copy()
    if offset is not None:
        index["offset"][3] = offset
    index["length"][3] = length
    path = write(tmp_path, repack(parts, index=index, shift_offsets=False))
    raises_named(medmask.FormatError, path, "chunk index entry points past the end of the file")
    # the same bytes from a file object (size known) and from memory:// (size unknown)
    with pytest.raises(medmask.FormatError, match="past the end of the file"):
        load_mask(io.BytesIO(path.read_bytes()))


@pytest.mark.parametrize("offset", [0, 20, HEADER_SIZE + 3])
def test_index_entry_into_header_or_metadata(tmp_path: Path, valid: bytes, offset: int) -> None:
    parts = split(valid)
    index = parts.index.copy()
    index["offset"][2] = offset
    path = write(tmp_path, repack(parts, index=index, shift_offsets=False))
    raises_named(medmask.FormatError, path, "points into the header or metadata")


# --- chunk streams -----------------------------------------------------------------------------


def test_truncated_chunk(tmp_path: Path, valid: bytes, memory_fs: Any) -> None:
    # a local file's size is known: the index check catches it before any chunk is read
    path = write(tmp_path, valid[:-5])
    raises_named(medmask.FormatError, path, "points past the end of the file")
    # an object's size is not (no extra request): the short read of the last chunk is caught
    memory_fs.pipe_file("/cut/case.msk", valid[:-5])
    with pytest.raises(
        medmask.FormatError, match=r"memory://cut/case.msk: chunk 7 is truncated \(expected"
    ):
        load_mask("memory://cut/case.msk")
    # the other chunks still read
    roi = (slice(0, 3), slice(None), slice(None))
    assert np.array_equal(load_mask("memory://cut/case.msk", roi=roi).data, make_mask().data[roi])


def test_chunk_crc_mismatch(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    data = bytearray(valid)
    data[int(parts.index["offset"][4]) + 2] ^= 0x10
    path = write(tmp_path, bytes(data))
    raises_named(medmask.ChecksumError, path, "chunk 4 checksum mismatch")
    # other chunks still read: the ROI of chunk 1 only
    assert load_mask(path, roi=(slice(0, 3), slice(10, 20), slice(None))).shape == (3, 10, 16)


def _replace_stream(parts: Parts, chunk_id: int, new: bytes) -> bytes:
    """Re-pack with chunk ``chunk_id``'s stream replaced (same length) and its CRC fixed."""
    old = parts.stream(chunk_id)
    assert len(new) == len(old)
    start = int(parts.index["offset"][chunk_id]) - parts.payload_start
    payload = parts.payload[:start] + new + parts.payload[start + len(new) :]
    index = parts.index.copy()
    index["crc"][chunk_id] = zlib.crc32(new)
    return repack(parts, index=index, payload=payload)


def test_chunk_undecodable_with_valid_crc(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    garbage = np.random.default_rng(3).bytes(len(parts.stream(5)))
    path = write(tmp_path, _replace_stream(parts, 5, garbage))
    err = raises_named(medmask.FormatError, path, "chunk 5 cannot be decoded")
    assert not isinstance(err, medmask.ChecksumError)


def test_chunk_stream_of_another_shape(tmp_path: Path) -> None:
    # chunk shapes differ at the far edge: (3, 10, 16) vs. the last z-chunk (2, 10, 16)
    m = make_mask()
    buf = io.BytesIO()
    save_mask(m, buf, chunks=(5, 10, 16))  # grid (3, 2, 1): z-chunks 5, 5, 2
    parts = split(buf.getvalue())
    last = parts.stream(5)
    index = parts.index.copy()
    # point chunk 1 (shape (5, 10, 16)) at a copy of chunk 5's stream (shape (2, 10, 16)),
    # CRC valid; a copy, because two entries may not share bytes (docs/format.md section 6)
    index["offset"][1], index["length"][1], index["crc"][1] = (
        parts.payload_start + len(parts.payload),
        len(last),
        zlib.crc32(last),
    )
    path = write(tmp_path, repack(parts, index=index, payload=parts.payload + last))
    raises_named(medmask.FormatError, path, r"chunk 1 cannot be decoded: .*shape")


def test_every_byte_of_a_chunk_stream_with_fixed_crc(valid: bytes, mask: SegmentationMask) -> None:
    """Corrupt each byte of a codec stream and fix the container CRC: the codec must notice."""
    parts = split(valid)
    chunk_id = 6
    stream = parts.stream(chunk_id)
    outcomes: Counter[str] = Counter()
    for pos in range(len(stream)):
        bad = bytearray(stream)
        bad[pos] ^= 0xA5
        data = _replace_stream(parts, chunk_id, bytes(bad))
        try:
            loaded = load_mask(io.BytesIO(data))
        except medmask.FormatError as exc:
            message = str(exc)
            outcomes["FormatError"] += 1
            assert f"chunk {chunk_id} cannot be decoded" in message
        else:
            assert loaded == mask, f"byte {pos} of the stream changed the voxels silently"
            outcomes["equal"] += 1
    assert outcomes["FormatError"] == len(stream), outcomes  # the codec's own CRCs catch all


# --- paths -------------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.msk"
    with pytest.raises(medmask.MaskFileNotFoundError, match=re.escape(str(path)) + ".*no such"):
        load_mask(path)
    with pytest.raises(FileNotFoundError):
        read_info(str(path))


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(medmask.MaskFileNotFoundError, match="is a directory"):
        load_mask(tmp_path)


# --- resource limits ---------------------------------------------------------------------------


def test_huge_shape_refused_before_allocating(tmp_path: Path, valid: bytes) -> None:
    meta = split(valid).metadata_json()
    huge = [100_000] * 3
    path = write(tmp_path, with_metadata(valid, shape=huge, space={**meta["space"], "shape": huge}))
    err = raises_named(medmask.AllocationLimitError, path, "above the limit")
    assert "1,000,000,000,000,000 voxels" in str(err)
    assert isinstance(err, ValueError)
    assert read_info(path).shape == (100_000,) * 3  # the metadata alone is fine
    # raising the limit gets past the check, to the next problem (the index does not match)
    with pytest.raises(medmask.FormatError, match="chunk index has 8 entries") as info:
        load_mask(path, max_voxels=10**16, max_bytes=10**16)
    assert not isinstance(info.value, medmask.AllocationLimitError)


def test_max_voxels_argument_and_settings(
    tmp_path: Path, valid: bytes, mask: SegmentationMask
) -> None:
    path = write(tmp_path, valid)
    problem = "3,840 voxels, above the limit of 1,000"
    raises_named(medmask.AllocationLimitError, path, problem, max_voxels=1000)
    assert load_mask(path, max_voxels=3840) == mask
    with medmask.config.set(max_voxels=3839):
        raises_named(medmask.AllocationLimitError, path, "limit of 3,839")
        assert load_mask(path, max_voxels=4000) == mask  # the argument wins
    with medmask.config.set(max_voxels=100000):
        assert load_mask(path) == mask


def test_chunk_claiming_too_many_voxels(tmp_path: Path, valid: bytes) -> None:
    parts = split(valid)
    meta = parts.metadata_json()
    shape = [64, 4096, 4096]  # 2^30 voxels: below the default limit, one chunk
    meta.update(shape=shape, chunks=shape, space={**meta["space"], "shape": shape})
    for label in meta["labels"]:
        label["bbox"], label["count"] = None, 0
    index = parts.index[[1]].copy()  # one stored stream of a few dozen bytes
    path = write(tmp_path, repack(parts, metadata=meta, index=index))
    raises_named(medmask.AllocationLimitError, path, "chunk 0 claims 1,073,741,824 voxels from")


# --- random single-byte corruption -------------------------------------------------------------


def covered_positions(data: bytes) -> np.ndarray:
    """Bool per byte: is it covered by a checksum (header, metadata, index or a chunk CRC)?"""
    parts = split(data)
    covered = np.zeros(len(data), dtype=bool)
    covered[:HEADER_SIZE] = True  # 0-59 by the header CRC, 60-63 are that CRC
    h = parts.header
    covered[h.metadata_offset : h.metadata_offset + h.metadata_length] = True
    covered[h.index_offset : h.index_offset + h.index_length] = True
    for entry in parts.index:
        start, length = int(entry["offset"]), int(entry["length"])
        covered[start : start + length] = True
    return covered


@pytest.mark.parametrize(
    ("long_names", "n_labels"), [(False, 5), (True, 40)], ids=["json-metadata", "zstd-metadata"]
)
def test_random_single_byte_corruptions(long_names: bool, n_labels: int) -> None:
    original = make_mask(n_labels=n_labels, seed=11, long_names=long_names)
    data = msk_bytes(original)
    parts = split(data)
    assert bool(parts.header.required_flags & FLAG_METADATA_ZSTD) == long_names
    assert (parts.index["length"] > 0).sum() >= 6
    covered = covered_positions(data)
    rng = np.random.default_rng(20240917 + n_labels)
    outcomes: Counter[str] = Counter()
    equal_positions = []
    for _ in range(1000):
        pos = int(rng.integers(len(data)))
        bad = bytearray(data)
        bad[pos] = (bad[pos] + int(rng.integers(1, 256))) % 256  # always a different value
        try:
            loaded = load_mask(io.BytesIO(bytes(bad)))
        except medmask.MedmaskError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # a foreign exception is the failure we look for
            pytest.fail(f"byte {pos}: foreign exception {type(exc).__name__}: {exc}")
        else:
            assert loaded == original, f"byte {pos}: loaded a different mask without an error"
            outcomes["loaded equal"] += 1
            equal_positions.append(pos)
    assert not any(covered[p] for p in equal_positions), equal_positions
    assert covered.all()  # the writer leaves no unchecked byte ...
    assert outcomes["loaded equal"] == 0  # ... so every corruption is detected
    assert outcomes["ChecksumError"] >= 900, outcomes
    print(dict(outcomes))
