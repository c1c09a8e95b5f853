"""Seeded random mutations of ``.msk`` and ``.mska`` files: own error or identical data.

Three kinds of mutation: raw (flipped/overwritten bytes, truncation, garbage appended; the
checksums stay as they were), checksum-fixed (bytes of one block changed and every CRC
recomputed, so the parsers and codecs see hostile contents), and metadata-level (a JSON field
replaced by a random value, CRCs recomputed). The outcome of every case is either a
``MedmaskError`` or data equal to what was written (for checksum-fixed changes that keep a
valid file: a valid mask of the declared shape). Anything else, a builtin exception, a
hang or a crash, fails.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zstandard
from spacetransformer import Space

import medmask
from medmask import MaskArchive, MaskFile, MedmaskError, SegmentationMask
from medmask.format.container import (
    FLAG_METADATA_ZSTD,
    HEADER_SIZE,
    INDEX_DTYPE,
    MAGIC_MSK,
    Header,
)
from medmask.format.mska import valid_slots

SHAPE = (10, 16, 14)
SPACE = Space(shape=SHAPE, origin=(1.0, -2.0, 3.5), spacing=(2.0, 0.7, 0.7))
N_RAW = 1500
N_FIXED = 1500
N_JSON = 600
N_ARCHIVE = 800


def _mask(seed: int, labels: int, dtype: Any = np.uint8) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = np.zeros(SHAPE, dtype)
    for value in range(1, labels + 1):
        lo = [int(rng.integers(0, s)) for s in SHAPE]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, SHAPE, strict=True)]
        data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    data[rng.random(SHAPE) < 0.02] = labels
    return SegmentationMask(data, {f"l{v}": v for v in range(1, labels + 1)}, SPACE)


MASKS = {
    "labels8": _mask(1, 5),
    "binary": _mask(2, 1),
    "labels16": _mask(3, 3, np.uint16),
}


def _msk_bytes(mask: SegmentationMask) -> bytes:
    buf = io.BytesIO()
    medmask.save_mask(mask, buf, chunks=(3, 8, 14))  # 8 chunks
    return buf.getvalue()


def _outcome(load: Callable[[], Any], expected: Any, *, allow_valid: bool = False) -> str:
    try:
        got = load()
    except MedmaskError as exc:
        return type(exc).__name__
    if got == expected:
        return "identical"
    if allow_valid:
        _assert_valid(got)
        return "other valid"
    raise AssertionError(f"silent wrong data: {got!r} != {expected!r}")


def _assert_valid(mask: Any) -> None:
    assert isinstance(mask, SegmentationMask)
    assert tuple(int(s) for s in mask.space.shape) == mask.shape
    values = set(np.unique(mask.data).tolist()) - {0}
    assert values <= set(mask.mapping.labels()), "a loaded mask holds unlisted values"


def _read_all(data: bytes) -> Callable[[], SegmentationMask]:
    def load() -> SegmentationMask:
        with MaskFile(io.BytesIO(data)) as f:
            f.info()
            return f.read()

    return load


@pytest.mark.parametrize("which", list(MASKS))
def test_raw_mutations_of_msk(which: str) -> None:
    mask = MASKS[which]
    original = _msk_bytes(mask)
    rng = np.random.default_rng(zlib.crc32(which.encode()))
    outcomes: dict[str, int] = {}
    for _ in range(N_RAW // len(MASKS)):
        data = bytearray(original)
        kind = int(rng.integers(0, 4))
        if kind == 0:  # flip bits
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[int(pos)] ^= int(rng.integers(1, 256))
        elif kind == 1:  # overwrite a run with random bytes
            start = int(rng.integers(0, len(data)))
            run = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8)
            data[start : start + len(run)] = run.tobytes()
        elif kind == 2:  # truncate
            del data[int(rng.integers(0, len(data))) :]
        else:  # garbage appended or inserted
            pos = int(rng.integers(0, len(data) + 1))
            garbage = rng.integers(0, 256, size=int(rng.integers(1, 100)), dtype=np.uint8)
            data[pos:pos] = garbage.tobytes()
        outcome = _outcome(_read_all(bytes(data)), mask)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\n{which}: {outcomes}")
    assert sum(v for k, v in outcomes.items() if k != "identical") > N_RAW // len(MASKS) // 2


def _rebuild(header: Header, meta: bytes, index: np.ndarray, payload: bytes) -> bytes:
    index_bytes = index.tobytes()
    header = dataclasses.replace(
        header,
        metadata_length=len(meta),
        metadata_crc=zlib.crc32(meta),
        index_offset=HEADER_SIZE + len(meta),
        index_count=len(index),
        index_crc=zlib.crc32(index_bytes),
    )
    return header.pack() + meta + index_bytes + payload


def _parts(data: bytes) -> tuple[Header, bytes, np.ndarray, bytes, int]:
    header = Header.parse(data, magic=MAGIC_MSK, name="x")
    meta = data[HEADER_SIZE : HEADER_SIZE + header.metadata_length]
    start = header.index_offset
    index = np.frombuffer(data[start : start + header.index_length], INDEX_DTYPE).copy()
    payload_at = start + header.index_length
    return header, meta, index, data[payload_at:], payload_at


@pytest.mark.parametrize("which", list(MASKS))
def test_checksum_fixed_mutations_of_msk(which: str) -> None:
    """Change bytes of one chunk stream and fix its CRC: the codecs see hostile streams."""
    mask = MASKS[which]
    header, meta, index, payload, payload_at = _parts(_msk_bytes(mask))
    rng = np.random.default_rng(7 + zlib.crc32(which.encode()))
    stored = np.flatnonzero(index["length"] > 0)
    outcomes: dict[str, int] = {}
    for _ in range(N_FIXED // len(MASKS)):
        chunk = int(rng.choice(stored))
        start = int(index["offset"][chunk]) - payload_at
        end = start + int(index["length"][chunk])
        stream = bytearray(payload[start:end])
        for pos in rng.integers(0, len(stream), size=int(rng.integers(1, 4))):
            stream[int(pos)] ^= int(rng.integers(1, 256))
        if rng.random() < 0.3:  # also fix the stream's own header CRC (bytes before it)
            ndim = stream[6] if stream[6] in (1, 2, 3) else 3
            crc_at = 8 + 4 * ndim + 46
            if crc_at + 4 <= len(stream):
                stream[crc_at : crc_at + 4] = zlib.crc32(stream[:crc_at]).to_bytes(4, "little")
        new_index = index.copy()
        new_index["crc"][chunk] = zlib.crc32(stream)
        data = _rebuild(header, meta, new_index, payload[:start] + bytes(stream) + payload[end:])
        outcome = _outcome(_read_all(data), mask, allow_valid=True)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\n{which}: {outcomes}")


def _random_json_value(rng: np.random.Generator) -> Any:
    choices: list[Any] = [
        None,
        True,
        -1,
        0,
        1,
        255,
        2**31,
        2**63,
        10**30,
        1.5,
        "",
        "x",
        "uint8",
        "bool",
        [],
        [0],
        [1, 2, 3],
        [2**40, 1, 1],
        [[0, 1], [0, 1], [0, 1]],
        {},
        {"id": "medmask.labels"},
        {"id": "medmask.binary", "level": 99},
    ]
    return choices[int(rng.integers(0, len(choices)))]


def _mutate_json(obj: Any, rng: np.random.Generator) -> None:
    """Replace one randomly chosen value somewhere in ``obj`` (in place)."""
    target = obj
    while True:
        keys = list(target.items()) if isinstance(target, dict) else list(enumerate(target))
        if not keys:
            return
        key, value = keys[int(rng.integers(0, len(keys)))]
        if isinstance(value, dict | list) and value and rng.random() < 0.6:
            target = value
            continue
        if isinstance(target, dict) and rng.random() < 0.15:
            del target[key]
        else:
            target[key] = _random_json_value(rng)
        return


@pytest.mark.parametrize("which", list(MASKS))
def test_metadata_field_mutations_of_msk(which: str) -> None:
    mask = MASKS[which]
    header, meta, index, payload, _ = _parts(_msk_bytes(mask))
    raw = meta
    if header.required_flags & FLAG_METADATA_ZSTD:
        raw = zstandard.ZstdDecompressor().decompress(meta)
    rng = np.random.default_rng(99 + zlib.crc32(which.encode()))
    outcomes: dict[str, int] = {}
    for _ in range(N_JSON // len(MASKS)):
        obj = json.loads(raw)
        for _ in range(int(rng.integers(1, 3))):
            _mutate_json(obj, rng)
        new_meta = json.dumps(obj).encode()
        plain = dataclasses.replace(header, required_flags=0)
        data = _rebuild(plain, new_meta, index, payload)
        # offsets moved with the metadata length: shift the index to the new payload start
        new_header, _, moved, _, payload_at = _parts(data)
        stored = moved["length"] > 0
        shift = payload_at - (header.index_offset + header.index_length)
        moved["offset"][stored] = (moved["offset"][stored].astype(np.int64) + shift).astype(
            np.uint64
        )
        data = _rebuild(new_header, new_meta, moved, payload)
        outcome = _outcome(_read_all(data), mask, allow_valid=True)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\n{which}: {outcomes}")


def test_raw_mutations_of_mska(tmp_path: Any) -> None:
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(MASKS["labels8"], "a")
        archive.add_segmask(MASKS["binary"], "b")
    states = [{"a": MASKS["labels8"], "b": MASKS["binary"]}]
    with MaskArchive(path, "a") as archive:  # generation 2, in place
        archive.add_segmask(MASKS["labels16"], "c")
    states.append({**states[0], "c": MASKS["labels16"]})
    with MaskArchive(path, "a") as archive:  # generation 3
        archive.remove("a")
    states.append({"b": MASKS["binary"], "c": MASKS["labels16"]})
    original = path.read_bytes()
    newest_slot = valid_slots(original, name="x")[0][0]
    rng = np.random.default_rng(2024)
    outcomes: dict[str, int] = {}
    for trial in range(N_ARCHIVE):
        data = bytearray(original)
        positions = rng.integers(0, len(data), size=int(rng.integers(1, 6)))
        for pos in positions:
            data[int(pos)] ^= int(rng.integers(1, 256))
        if trial % 5 == 4:
            del data[int(rng.integers(HEADER_SIZE, len(data))) :]
        case = tmp_path / f"case{trial % 7}.mska"
        case.write_bytes(bytes(data))
        slot_hit = any(
            newest_slot * HEADER_SIZE <= int(p) < (newest_slot + 1) * HEADER_SIZE for p in positions
        )

        def load(case: Any = case) -> dict[str, SegmentationMask]:
            with MaskArchive(case) as archive:
                archive.info()
                return archive.read_all_masks()

        try:
            got = load()
        except MedmaskError as exc:
            outcome = type(exc).__name__
        else:
            if got == states[-1]:
                outcome = "identical"
            else:  # only a damaged newest slot (a torn write) may show an older generation
                assert slot_hit, f"trial {trial}: silent wrong data"
                assert got in states[:-1], f"trial {trial}: silent wrong data"
                outcome = "older generation (torn slot)"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\nmska: {outcomes}")
    assert outcomes.get("ChecksumError", 0) > N_ARCHIVE // 4
