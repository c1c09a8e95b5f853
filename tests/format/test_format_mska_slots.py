"""Damaged ``.mska`` header slots (format/mska.py): a slot one flipped bit away from a valid
one is located and repaired; torn slots (random bytes, zeros, several bits) never are."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmask.format.container import HEADER_SIZE, MAGIC_MSKA, Header
from medmask.format.mska import damaged_slots, repair_slot, slot_is_intact

BITS = HEADER_SIZE * 8


def _slot(
    generation: int = 3, meta: int = 4096, meta_len: int = 300, index: int = 4396, count: int = 7
) -> bytes:
    return Header(
        magic=MAGIC_MSKA,
        metadata_offset=meta,
        metadata_length=meta_len,
        metadata_crc=0x1234_5678,
        index_offset=index,
        index_count=count,
        index_crc=0x9ABC_DEF0,
        generation=generation,
    ).pack()


def _flip(data: bytes, *bits: int) -> bytes:
    out = bytearray(data)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


headers = st.builds(
    _slot,
    generation=st.integers(0, 2**64 - 1),
    meta=st.integers(128, 2**64 - 1),
    meta_len=st.integers(0, 2**32 - 1),
    index=st.integers(128, 2**64 - 1),
    count=st.integers(0, 2**32 - 1),
)


def test_every_single_bit_flip_is_located_and_undone() -> None:
    """All 512 positions: the 60-byte body, the magic among them, and the CRC itself."""
    slot = _slot()
    assert repair_slot(slot) is None  # intact: nothing to repair
    for bit in range(BITS):
        damaged = _flip(slot, bit)
        assert not slot_is_intact(damaged)
        assert repair_slot(damaged) == (slot, bit), bit


@settings(max_examples=300, deadline=None)
@given(slot=headers, bit=st.integers(0, BITS - 1))
def test_any_header_with_one_flipped_bit_is_repaired(slot: bytes, bit: int) -> None:
    assert repair_slot(_flip(slot, bit)) == (slot, bit)


@settings(max_examples=300, deadline=None)
@given(slot=headers, bits=st.sets(st.integers(0, BITS - 1), min_size=2, max_size=3))
def test_two_or_three_flipped_bits_are_never_repaired(slot: bytes, bits: set[int]) -> None:
    """CRC-32 keeps Hamming distance 4 over 64 bytes: damage in 2 or 3 bits is never one bit
    away from another valid slot, so it is never "repaired" into a wrong header."""
    assert repair_slot(_flip(slot, *bits)) is None


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE))
def test_random_bytes_are_torn_not_damaged(data: bytes) -> None:
    assert damaged_slots(data + data, name="x.mska") == []


def test_zeroed_slot_of_a_fresh_archive_is_not_damaged() -> None:
    assert repair_slot(bytes(HEADER_SIZE)) is None
    assert damaged_slots(_slot(1) + bytes(HEADER_SIZE), name="x.mska") == []


@pytest.mark.parametrize(
    ("bits", "repaired"),
    [((20 * 8,), True), ((28 * 8 + 5,), True), ((61 * 8,), True), ((20 * 8, 21 * 8), False)],
)
def test_damaged_slots_gives_the_repaired_or_written_fields(
    bits: tuple[int, ...], repaired: bool
) -> None:
    newest, older = _slot(3), _slot(2, meta=9000, index=9300)
    found = damaged_slots(_flip(newest, *bits) + older, name="x.mska")
    assert [d.slot for d in found] == [0]
    if repaired:
        assert found[0].bit == bits[0]
        assert found[0].header == Header.parse(newest, magic=MAGIC_MSKA, name="x")
        assert "slot 0 is damaged" in found[0].describe()
    else:  # fields as written: the generation is not confirmed by any checksum
        assert found[0].bit is None
        assert found[0].header.generation == 3 ^ 1 ^ (1 << 8)
        assert "more than one bit" in found[0].describe()


def test_damaged_slot_with_impossible_fields_is_skipped() -> None:
    """Fields are parsed like any header: offsets into the slots are refused, not followed."""
    body = bytearray(_slot())
    struct.pack_into("<Q", body, 28, 10)  # metadata inside the header slot
    assert damaged_slots(bytes(body) + _slot(2), name="x.mska") == []
