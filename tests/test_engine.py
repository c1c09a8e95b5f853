"""The read engine (``medmask.engine``): every path that returns voxels checks what
``load_mask`` checks. Two implementations, one answer: ``MaskFile`` and the zarr store
(``medmask.open_zarr``) give the same array, or refuse with the same error class, on
generated masks and on damaged or hostile variants of them (valid CRCs, lying contents)."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacetransformer import Space

import medmask
from damaged_archives import commit_directory
from medmask import (
    AllocationLimitError,
    FormatError,
    MaskArchive,
    MaskFile,
    MedmaskError,
    SegmentationMask,
)
from medmask.codecs import BinaryCodec, EdgesCodec, LabelCodec
from medmask.format.container import HEADER_SIZE
from medmask.format.descriptor import LabelEntry, MaskDescriptor
from medmask.format.encoding import EncodedMask, encode_mask
from medmask.format.msk import build_msk
from medmask.format.mska import (
    SLOTS_SIZE,
    ArchiveDirectory,
    Member,
    directory_bytes,
    slot_header,
)

DTYPES = {1: np.bool_, 8: np.uint8, 16: np.uint16}
VARIANTS = (
    "sound",
    "wrong_dtype",
    "wrong_shape",
    "wrong_kind",
    "lying_bbox",
    "count_without_bbox",
    "bbox_without_count",
    "oversized",
)


# --- building files -----------------------------------------------------------------------------


def write_msk(path: Path, encoded: EncodedMask) -> Path:
    """A ``.msk`` of ``encoded`` exactly as given (every CRC valid, nothing checked)."""
    path.write_bytes(b"".join(build_msk(encoded)))
    return path


def write_mska(path: Path, encoded: EncodedMask) -> Path:
    """A ``.mska`` whose one member ``m`` is ``encoded`` exactly as given (valid CRCs)."""
    space = encoded.descriptor.space
    descriptor = dataclasses.replace(encoded.descriptor, space=None)

    def directory(first: int) -> ArchiveDirectory:
        return ArchiveDirectory(space, (Member("m", descriptor, encoded.index(first)),))

    meta, _, index, _ = directory_bytes(directory(0))  # offsets do not change the sizes
    meta, flags, index, _ = directory_bytes(directory(SLOTS_SIZE + len(meta) + len(index)))
    header = slot_header(1, SLOTS_SIZE, meta, flags, SLOTS_SIZE + len(meta), index)
    streams = b"".join(s for s in encoded.streams if s)
    path.write_bytes(header.pack() + bytes(HEADER_SIZE) + meta + index + streams)
    return path


def _with_labels(encoded: EncodedMask, labels: tuple[LabelEntry, ...]) -> EncodedMask:
    return EncodedMask(dataclasses.replace(encoded.descriptor, labels=labels), encoded.streams)


def _first_stored(encoded: EncodedMask) -> int:
    return next(i for i, s in enumerate(encoded.streams) if s)


def _replace_stream(encoded: EncodedMask, chunk_id: int, stream: bytes) -> EncodedMask:
    streams = list(encoded.streams)
    streams[chunk_id] = stream
    return EncodedMask(encoded.descriptor, streams)


def variant(encoded: EncodedMask, data: np.ndarray, kind: str) -> EncodedMask:
    """``encoded`` damaged in one way (``kind``: one of :data:`VARIANTS`)."""
    d = encoded.descriptor
    first = _first_stored(encoded)
    block = np.ascontiguousarray(data[d.chunk_box(first)])
    labelled = [e for e in d.labels if e.value != 0 and e.count]
    if kind == "sound":
        return encoded
    if kind == "wrong_dtype":  # a wider stream: 258 would read as 2 if it were cast to uint8
        wide = np.where(block != 0, block.astype(np.uint32) + 257, 0)
        other = np.uint32 if d.dtype.itemsize == 2 else np.uint16
        return _replace_stream(encoded, first, EdgesCodec().encode(wide.astype(other)))
    if kind == "wrong_shape":  # padded with zeros if it were accepted
        smaller = block[:, :, : block.shape[2] - 1] if block.shape[2] > 1 else None
        part = smaller if smaller is not None else np.concatenate([block, block], axis=2)
        return _replace_stream(encoded, first, EdgesCodec().encode(np.ascontiguousarray(part)))
    if kind == "wrong_kind":
        codec = BinaryCodec() if d.dtype == np.bool_ else LabelCodec()
        return _replace_stream(encoded, first, codec.encode(block))
    entry = labelled[0]
    others = tuple(e for e in d.labels if e is not entry)
    if kind == "lying_bbox":  # one voxel that is not the label's; a possible count
        lie = LabelEntry(entry.name, entry.value, 1, ((0, 0), (0, 0), (0, 0)))
        if data[0, 0, 0] == entry.value:
            last = tuple(s - 1 for s in d.shape)
            lie = dataclasses.replace(lie, bbox=tuple((v, v) for v in last))  # type: ignore[arg-type]
        return _with_labels(encoded, (lie, *others))
    if kind == "count_without_bbox":
        return _with_labels(encoded, (dataclasses.replace(entry, bbox=None), *others))
    if kind == "bbox_without_count":
        return _with_labels(encoded, (dataclasses.replace(entry, count=0), *others))
    assert kind == "oversized"  # 2^60 voxels declared; one all-zero chunk
    shape = (1 << 20, 1 << 20, 1 << 20)
    huge = dataclasses.replace(
        d, shape=shape, chunks=shape, space=Space(shape=shape), labels=(entry,)
    )
    return EncodedMask(huge, [b""])


def outcome(read: Callable[[], Any]) -> np.ndarray | type[MedmaskError]:
    """The array read, or the class of the medmask error that refused it (anything else,
    a builtin error included, fails the test)."""
    try:
        return np.asarray(read())
    except MedmaskError as exc:
        return type(exc)


def read_file(path: Path) -> np.ndarray:
    with MaskFile(path) as f:
        return f.read_array()


def read_zarr(path: Path, node: str = "mask") -> np.ndarray:
    return np.asarray(medmask.open_zarr(str(path))[node][...])


def read_member(path: Path) -> np.ndarray:
    with MaskArchive(path) as archive:
        return np.asarray(archive["m"])


def load_member(path: Path) -> np.ndarray:
    with MaskArchive(path) as archive:
        return archive.load_segmask("m").data


def assert_same(a: np.ndarray | type, b: np.ndarray | type) -> None:
    if isinstance(a, type) or isinstance(b, type):
        assert a == b
        return
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


# --- two implementations, one answer --------------------------------------------------------------


@st.composite
def stored_masks(draw: st.DrawFn) -> tuple[SegmentationMask, tuple[int, int, int]]:
    shape = tuple(draw(st.integers(1, 6)) for _ in range(3))
    bit_depth = draw(st.sampled_from(sorted(DTYPES)))
    top = 1 if bit_depth == 1 else 5
    data = np.zeros(shape, DTYPES[bit_depth])
    for _ in range(draw(st.integers(1, 4))):
        lo = [draw(st.integers(0, s - 1)) for s in shape]
        hi = [draw(st.integers(a + 1, s)) for a, s in zip(lo, shape, strict=True)]
        data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = draw(st.integers(1, top))
    values = sorted({int(v) for v in np.unique(data)} - {0})
    mapping = {f"v{v}": v for v in values}
    if draw(st.booleans()) and bit_depth > 1:
        mapping["unused"] = top + 1  # a label without voxels: count 0, bbox null
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    mask = SegmentationMask(data, mapping, Space(shape=shape), bit_depth=bit_depth)
    return mask, chunks  # type: ignore[return-value]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stored_masks(), st.sampled_from(VARIANTS))
def test_maskfile_and_zarr_store_agree_on_sound_and_hostile_files(
    case: tuple[SegmentationMask, tuple[int, int, int]], kind: str
) -> None:
    mask, chunks = case
    encoded = variant(encode_mask(mask, chunks=chunks), mask.data, kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_msk(Path(tmp) / "case.msk", encoded)
        from_file, from_zarr = outcome(lambda: read_file(path)), outcome(lambda: read_zarr(path))
        assert_same(from_file, from_zarr)
        loaded = outcome(lambda: medmask.load_mask(path).data)
        archive = write_mska(Path(tmp) / "case.mska", encoded)
        from_member = outcome(lambda: read_member(archive))
        assert_same(from_member, outcome(lambda: read_zarr(archive, "m")))
        with_labels = outcome(lambda: load_member(archive))
    assert_same(loaded, from_file)
    assert_same(from_member, from_file)
    assert_same(with_labels, from_file)
    expected: np.ndarray | type[MedmaskError] = {
        "sound": mask.data,
        "lying_bbox": mask.data,  # whole reads do not use the bbox
        "oversized": AllocationLimitError,
    }.get(kind, FormatError)
    assert_same(from_file, expected)


def test_a_uint16_stream_in_a_uint8_file_is_refused_everywhere(tmp_path: Path) -> None:
    data = np.zeros((4, 10, 10), np.uint8)
    data[1:3, 2:7, 3:8] = 2
    mask = SegmentationMask(data, {"a": 2}, Space(shape=data.shape))
    encoded = encode_mask(mask, chunks=(2, 10, 10))
    wide = np.where(data[0:2] != 0, 258, 0).astype(np.uint16)  # reads as 2 if cast to uint8
    path = write_msk(tmp_path / "w.msk", _replace_stream(encoded, 0, EdgesCodec().encode(wide)))
    match = r"w\.msk: chunk 0 cannot be decoded: .*dtype uint8 .*Got .*dtype uint16"
    with pytest.raises(FormatError, match=match):
        medmask.load_mask(path)
    group = medmask.open_zarr(str(path))
    with pytest.raises(FormatError, match=match):
        group["mask"][0:2]
    with pytest.raises(FormatError, match=match):
        group["structures/a"][0:2]
    np.testing.assert_array_equal(group["mask"][2:4], data[2:4])  # the sound chunk reads


def test_a_smaller_stream_in_a_chunk_is_refused_not_padded(tmp_path: Path) -> None:
    data = np.ones((4, 10, 10), np.uint8)
    mask = SegmentationMask(data, {"a": 1}, Space(shape=data.shape))
    encoded = encode_mask(mask, chunks=(4, 10, 10))
    small = EdgesCodec().encode(np.ones((2, 5, 5), np.uint8))
    path = write_msk(tmp_path / "s.msk", _replace_stream(encoded, 0, small))
    match = r"shape \(4, 10, 10\)\. Got .*shape \(2, 5, 5\)"
    with pytest.raises(FormatError, match=match):
        medmask.load_mask(path)
    with pytest.raises(FormatError, match=match):
        medmask.open_zarr(str(path))["mask"][...]


def test_edge_chunks_stored_trimmed_still_read_through_zarr(tmp_path: Path) -> None:
    data = np.arange(5 * 7 * 9, dtype=np.uint16).reshape(5, 7, 9) % 4
    mask = SegmentationMask(data, {f"v{v}": v for v in (1, 2, 3)}, Space(shape=data.shape))
    path = tmp_path / "edges.msk"
    medmask.save_mask(mask, path, chunks=(2, 3, 4))
    np.testing.assert_array_equal(medmask.open_zarr(str(path))["mask"][...], data)


def test_the_zarr_store_honours_the_limits_at_open(tmp_path: Path) -> None:
    data = np.ones((4, 5, 6), np.uint8)
    path = tmp_path / "m.msk"
    medmask.save_mask(SegmentationMask(data, {"a": 1}, Space(shape=data.shape)), path)
    with pytest.raises(AllocationLimitError, match=r"m\.msk: declares .* above the limit of 100"):
        medmask.open_zarr(str(path), max_voxels=100)
    with pytest.raises(AllocationLimitError, match="above the limit of 100 bytes"):
        medmask.open_zarr(str(path), max_bytes=100)
    np.testing.assert_array_equal(medmask.open_zarr(str(path), max_voxels=120)["mask"][...], data)


# --- statistics: refused at open, checked by structure reads -------------------------------------


def _sound(tmp_path: Path) -> tuple[EncodedMask, np.ndarray]:
    data = np.zeros((6, 8, 8), np.uint8)
    data[1:3, 2:4, 2:6] = 1  # liver: 16 voxels
    data[4, 5, 1:3] = 2
    mask = SegmentationMask(data, {"liver": 1, "spleen": 2}, Space(shape=data.shape))
    return encode_mask(mask, chunks=(2, 8, 8)), data


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"bbox": None}, r"label 'liver': expected a bbox for its 16 voxels, got null"),
        ({"count": 0}, r"label 'liver': expected bbox null for 0 voxels, got \[\(1, 2\)"),
        ({"count": 17}, r"label 'liver': expected at most 16 voxels inside bbox"),
    ],
    ids=["count-without-bbox", "bbox-without-count", "count-beyond-bbox"],
)
def test_impossible_statistics_are_refused_at_open(
    tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    encoded, _ = _sound(tmp_path)
    liver, spleen = encoded.descriptor.labels
    path = write_msk(tmp_path / "x.msk", _with_labels(encoded, (replace(liver, change), spleen)))
    for open_it in (MaskFile, medmask.read_info, lambda p: medmask.open_zarr(str(p))):
        with pytest.raises(FormatError, match=r"x\.msk: invalid metadata: " + problem):
            open_it(path)


def test_a_bbox_on_background_is_refused_at_open(tmp_path: Path) -> None:
    encoded, _ = _sound(tmp_path)
    background = LabelEntry("background", 0, 100, ((0, 0), (0, 0), (0, 0)))
    path = write_msk(
        tmp_path / "b.msk", _with_labels(encoded, (*encoded.descriptor.labels, background))
    )
    with pytest.raises(FormatError, match="expected bbox null for background label"):
        medmask.load_mask(path)


def replace(entry: LabelEntry, change: dict[str, Any]) -> LabelEntry:
    return dataclasses.replace(entry, **change)


def _lying_archive(tmp_path: Path, liver: LabelEntry) -> Path:
    """An archive whose member ``m`` lists ``liver`` (valid CRCs): a new generation whose
    directory is the old one with that entry replaced."""
    _, data = _sound(tmp_path)
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(
            SegmentationMask(data, {"liver": 1, "spleen": 2}, Space(shape=data.shape)),
            "m",
            chunks=(2, 8, 8),
        )

    def lie(directory: ArchiveDirectory) -> ArchiveDirectory:
        (member,) = directory.members
        labels = tuple(liver if e.name == "liver" else e for e in member.descriptor.labels)
        member = dataclasses.replace(
            member, descriptor=dataclasses.replace(member.descriptor, labels=labels)
        )
        return dataclasses.replace(directory, members=(member,))

    commit_directory(path, lie)
    return path


def test_a_lying_bbox_is_refused_by_structure_reads(tmp_path: Path) -> None:
    # liver's 16 voxels lie in z 1-2; the stored bbox says z 4-5 (16 voxels fit there)
    lie = LabelEntry("liver", 1, 16, ((4, 5), (2, 3), (2, 5)))
    path = _lying_archive(tmp_path, lie)
    with MaskArchive(path) as archive:
        assert archive.load_segmask("m").label_counts()["liver"] == 16  # whole reads are right
        problem = (
            r"a\.mska \[m\]: label 'liver' \(value 1\): expected the 16 voxels its metadata "
            r"lists inside its stored bbox \(\(4, 5\), \(2, 3\), \(2, 5\)\)\. Got 0"
        )
        with pytest.raises(FormatError, match=problem):
            archive.load_structure("liver")
        with pytest.raises(FormatError, match=problem):
            archive.get_binary_mask_by_names(["spleen", "liver"])
        assert archive.load_structure("spleen").sum() == 2
        assert any("liver" in p for p in archive.verify())


def test_a_lying_bbox_is_refused_by_zarr_structure_arrays(tmp_path: Path) -> None:
    # the structure array has chunk keys only inside the stored bbox: checked before serving
    path = _lying_archive(tmp_path, LabelEntry("liver", 1, 16, ((4, 5), (2, 3), (2, 5))))
    group = medmask.open_zarr(str(path))
    problem = r"a\.mska \[m\]: label 'liver' \(value 1\): expected the 16 voxels .*Got 0"
    with pytest.raises(FormatError, match=problem):
        group["structures/liver"][...]
    with pytest.raises(FormatError, match=problem):
        group["structures/liver"][4:6]
    _, data = _sound(tmp_path)
    np.testing.assert_array_equal(group["m"][...], data)  # the member array is right
    np.testing.assert_array_equal(group["structures/spleen"][...], data == 2)


def test_structure_reads_of_an_oversized_archive_are_refused_before_allocating(
    tmp_path: Path,
) -> None:
    encoded, _ = _sound(tmp_path)
    shape = (1 << 20, 1 << 20, 1 << 20)
    labels = (LabelEntry("empty", 1, 0, None), LabelEntry("organ", 2, 1, ((0, 0),) * 3))
    huge = dataclasses.replace(
        encoded.descriptor, shape=shape, chunks=shape, space=Space(shape=shape), labels=labels
    )
    path = write_mska(tmp_path / "huge.mska", EncodedMask(huge, [b""]))
    with MaskArchive(path) as archive:
        for name in ("empty", "organ"):  # nothing to decode for "empty": the output is refused
            with pytest.raises(AllocationLimitError, match=r"huge\.mska.*above the limit"):
                archive.load_structure(name)
        with pytest.raises(AllocationLimitError, match=r"huge\.mska \[m\]: declares"):
            archive.load_segmask("m")


def test_sound_structure_reads_are_unchanged(tmp_path: Path) -> None:
    _, data = _sound(tmp_path)
    path = tmp_path / "ok.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(
            SegmentationMask(data, {"liver": 1, "spleen": 2}, Space(shape=data.shape)), "m"
        )
        archive.add_structures({"kidney": data == 2}, mapping={"kidney": 5})
        pending = archive.load_structure("kidney")  # not written yet: decoded from memory
        np.testing.assert_array_equal(pending, data == 2)
    with MaskArchive(path) as archive:
        np.testing.assert_array_equal(archive.load_structure("liver"), data == 1)
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names(["liver", "kidney"]), data != 0
        )
    group = medmask.open_zarr(str(path))
    for name, expected in (("liver", data == 1), ("kidney", data == 2), ("spleen", data == 2)):
        np.testing.assert_array_equal(group[f"structures/{name}"][...], expected)
        np.testing.assert_array_equal(group[f"structures/{name}"][1:2], expected[1:2])


# --- the pure pieces ------------------------------------------------------------------------------


def test_structure_roi_covers_the_stored_boxes() -> None:
    from medmask.engine import check_label_counts, structure_roi

    d = _pieces_descriptor()
    assert structure_roi(d, {1, 2}) == (slice(1, 7), slice(0, 3), slice(3, 10))
    assert structure_roi(d, {1}) == (slice(1, 2), slice(2, 3), slice(3, 4))
    assert structure_roi(d, {3}) is None
    block = np.zeros((6, 3, 7), np.uint8)
    block[0, 2, 0] = 1
    check_label_counts(d, {1}, (slice(1, 7), slice(0, 3), slice(3, 10)), block, name="f")
    block[0, 0, 0] = 1  # outside a's bbox, inside the roi: not counted
    check_label_counts(d, {1}, (slice(1, 7), slice(0, 3), slice(3, 10)), block, name="f")
    with pytest.raises(FormatError, match=r"f: label 'b' .*Got 0"):
        check_label_counts(d, {1, 2}, (slice(1, 7), slice(0, 3), slice(3, 10)), block, name="f")


def test_the_engine_checks_each_member_before_reading_anything(tmp_path: Path) -> None:
    from medmask.engine import OpenedFile

    encoded, data = _sound(tmp_path)
    path = write_msk(tmp_path / "m.msk", encoded)
    reads: list[Any] = []
    with MaskFile(path) as f:
        member = f._directory.members[0]

        def read(ranges: Any) -> list[bytes]:
            reads.append(ranges)
            raise AssertionError("read before the limits were checked")

        engine = OpenedFile(f.name, read, f._directory.payload_start, None, max_voxels=10)
        with pytest.raises(AllocationLimitError, match=r"m\.msk: declares"):
            engine.read_region(member, (slice(0, 1), slice(0, 1), slice(0, 1)))
        assert reads == []
        roi = (slice(1, 3), slice(2, 4), slice(2, 6))
        sound = OpenedFile.open(f._source, f._directory)
        np.testing.assert_array_equal(sound.read_region(member, roi), data[roi])
        found = list(sound.iter_labels([(member, {1}), (member, {1, 2}), (member, set())]))
        assert found[2] is None
        assert found[0] is not None
        assert found[0][0] == roi
        assert found[1] is not None
        assert found[1][0] == (slice(1, 5), slice(2, 6), slice(1, 6))


# --- exact answers of the engine's small pieces -----------------------------------------------


def _pieces_descriptor() -> MaskDescriptor:
    return MaskDescriptor(
        shape=(10, 10, 10),
        bit_depth=8,
        labels=(
            LabelEntry("a", 1, 1, ((1, 1), (2, 2), (3, 3))),
            LabelEntry("b", 2, 2, ((5, 6), (0, 0), (9, 9))),
            LabelEntry("c", 3, 0, None),
        ),
        codec={"id": "medmask.edges"},
        chunks=(10, 10, 10),
    )


def test_known_size_from_the_source_or_a_short_first_read() -> None:
    from medmask.engine import known_size
    from medmask.io import HEAD_GUESS

    class Sized:
        def __init__(self, size: int | None) -> None:
            self.size = size

    assert known_size(Sized(5), b"x" * HEAD_GUESS) == 5
    assert known_size(Sized(5), b"xx") == 5  # the source's size wins over the read
    assert known_size(Sized(None), b"x" * (HEAD_GUESS - 1)) == HEAD_GUESS - 1
    assert known_size(Sized(None), b"x" * HEAD_GUESS) is None  # a full read: maybe more


def test_maskfile_file_size_and_basic_indexing(tmp_path: Path) -> None:
    encoded, data = _sound(tmp_path)
    path = write_msk(tmp_path / "m.msk", encoded)
    with MaskFile(path) as f:
        assert f.file_size == path.stat().st_size
        for key in (
            (slice(1, 3), slice(2, 4), slice(2, 6)),
            (4, 5),
            (Ellipsis, 1),
            (slice(3, None), 5, slice(None, 3)),
            -2,
        ):
            got = f[key]
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, data[key])
        full = f.__array__()
        assert full.dtype == np.uint8
        np.testing.assert_array_equal(full, data)
        wide = f.__array__(np.int16)
        assert wide.dtype == np.int16
        np.testing.assert_array_equal(wide, data.astype(np.int16))
        as_float = np.asarray(f, dtype=np.float32)
        assert as_float.dtype == np.float32
        np.testing.assert_array_equal(as_float, data)


def test_volumes_without_a_space_count_one_cubic_millimetre_a_voxel(tmp_path: Path) -> None:
    from medmask.engine import info_from

    encoded, _ = _sound(tmp_path)
    d = encoded.descriptor
    info = info_from(dataclasses.replace(d, space=None), encoded.index(0), "x")
    assert info.volumes_mm3() == {"liver": 16.0, "spleen": 2.0}
    spaced = dataclasses.replace(d, space=Space(shape=d.shape, spacing=(2.0, 0.5, 3.0)))
    assert info_from(spaced, encoded.index(0), "x").volumes_mm3() == {"liver": 48.0, "spleen": 6.0}


def test_label_counts_are_checked_exactly_inside_each_stored_bbox() -> None:
    from medmask.engine import check_label_counts

    d = _pieces_descriptor()
    roi = (slice(1, 7), slice(0, 3), slice(3, 10))  # starts past 0 on z and x
    block = np.zeros((6, 3, 7), np.uint8)
    block[0, 2, 0] = 1  # a's one voxel, at (1, 2, 3)
    block[1, 2, 0] = 1  # just past a's bbox on z, (2, 2, 3)
    block[0, 2, 1] = 1  # just past it on x, (1, 2, 4)
    block[0, 1, 0] = 1  # just before it on y, (1, 1, 3)
    check_label_counts(d, {1}, roi, block, name="f")  # only the voxel inside counts
    check_label_counts(d, {3}, roi, block, name="f")  # no bbox, count 0: nothing to find
    two = dataclasses.replace(d, labels=(dataclasses.replace(d.labels[0], count=2), *d.labels[1:]))
    with pytest.raises(FormatError, match=r"f: label 'a' \(value 1\): expected the 2 .*Got 1;"):
        check_label_counts(two, {1}, roi, block, name="f")
    # a label not asked for is skipped, and the ones after it are still checked
    with pytest.raises(FormatError, match=r"f: label 'b' \(value 2\): expected the 2 .*Got 0;"):
        check_label_counts(d, {2, 3}, roi, block, name="f")


def test_check_label_count_message_word_for_word() -> None:
    from medmask.engine import check_label_count

    entry = _pieces_descriptor().labels[0]
    check_label_count(entry, 1, name="f.mska [m]")
    with pytest.raises(FormatError) as caught:
        check_label_count(entry, 2, name="f.mska [m]")
    assert str(caught.value) == (
        "f.mska [m]: label 'a' (value 1): expected the 1 voxels its metadata lists inside its "
        "stored bbox ((1, 1), (2, 2), (3, 3)). Got 2; the label statistics are wrong (the file "
        "is corrupted or was written by a faulty writer)."
    )


def test_count_in_bbox_counts_one_chunk_inside_the_stored_bbox_only(tmp_path: Path) -> None:
    from medmask.engine import count_in_bbox

    encoded, data = _sound(tmp_path)
    member = Member("", encoded.descriptor, encoded.index(0))
    liver = encoded.descriptor.labels[0]
    assert liver.name == "liver"
    # chunk 0 is z 0:2; liver there: z 1, y 2:4, x 2:6 (8 voxels)
    assert count_in_bbox(member, liver, 0, encoded.streams[0], name="f") == 8
    narrow = dataclasses.replace(liver, bbox=((1, 1), (2, 2), (2, 4)))
    assert count_in_bbox(member, narrow, 0, encoded.streams[0], name="f") == 3
    assert int(np.count_nonzero(data[1:2, 2:3, 2:5] == 1)) == 3
    edge = dataclasses.replace(liver, bbox=((0, 0), (2, 3), (2, 5)))  # z 0 holds nothing
    assert count_in_bbox(member, edge, 0, encoded.streams[0], name="f") == 0


def test_verify_decoded_counts_background_and_lists_ten_unlisted_values() -> None:
    from medmask.engine import verify_decoded

    data = np.zeros((2, 3, 4), np.uint8)
    data[0, 1, 1:3] = 1
    data[1, 2, 3] = 2
    labels = (
        LabelEntry("background", 0, 21, None),
        LabelEntry("a", 1, 2, ((0, 0), (1, 1), (1, 2))),
        LabelEntry("b", 2, 1, ((1, 1), (2, 2), (3, 3))),
    )
    d = MaskDescriptor(
        shape=(2, 3, 4), bit_depth=8, labels=labels, codec={"id": "medmask.edges"}, chunks=(2, 3, 4)
    )
    assert verify_decoded(data, d, name="f") == []
    wrong = dataclasses.replace(d, labels=(dataclasses.replace(labels[0], count=20), *labels[1:]))
    assert verify_decoded(data, wrong, name="f") == [
        "f: label 'background' (value 0) has 21 voxels; the metadata says 20."
    ]
    many = np.arange(1, 13, dtype=np.uint8).reshape(1, 1, 12)
    one = MaskDescriptor(
        shape=(1, 1, 12),
        bit_depth=8,
        labels=(LabelEntry("a", 1, 1, ((0, 0), (0, 0), (0, 0))),),
        codec={"id": "medmask.edges"},
        chunks=(1, 1, 12),
    )
    assert verify_decoded(many, one, name="f") == [
        "f: voxels hold values [2, 3, 4, 5, 6, 7, 8, 9, 10, 11] that no label lists."
    ]


def test_decode_unstored_applies_both_limits_and_collects_values(tmp_path: Path) -> None:
    from medmask.engine import decode_unstored

    _, data = _sound(tmp_path)
    mask = SegmentationMask(data, {"liver": 1, "spleen": 2}, Space(shape=data.shape))
    encoded = encode_mask(mask, chunks=(2, 8, 8), codec="medmask.labels")  # tells its values
    d, index = encoded.descriptor, encoded.index(0)
    streams = {i: s for i, s in enumerate(encoded.streams) if s}
    full = (slice(0, 6), slice(0, 8), slice(0, 8))
    with pytest.raises(
        AllocationLimitError,
        match=r"^f \[m\]: declares \(6, 8, 8\) = 384 voxels, above the limit of 383 ",
    ):
        decode_unstored(d, index, streams, full, name="f [m]", max_voxels=383)
    with pytest.raises(
        AllocationLimitError,
        match=r"^f \[m\]: declares \(6, 8, 8\) uint8 = 384 bytes, above the limit of 383 bytes",
    ):
        decode_unstored(d, index, streams, full, name="f [m]", max_bytes=383)
    present: list[Any] = []
    got = decode_unstored(
        d, index, streams, full, name="f [m]", present=present, max_voxels=384, max_bytes=384
    )
    np.testing.assert_array_equal(got, data)
    assert len(present) == 3  # one entry per stored chunk
    assert sorted(tuple(int(v) for v in p) for p in present) == [(0, 1), (0, 1), (0, 2)]


def test_iter_labels_goes_on_after_a_read_without_voxels(tmp_path: Path) -> None:
    from medmask.engine import OpenedFile

    encoded, data = _sound(tmp_path)
    path = write_msk(tmp_path / "m.msk", encoded)
    with MaskFile(path) as f:
        member = f._directory.members[0]
        engine = OpenedFile.open(f._source, f._directory)
        found = list(engine.iter_labels([(member, set()), (member, {2}), (member, {7})]))
    assert len(found) == 3
    assert found[0] is None
    assert found[2] is None
    assert found[1] is not None
    roi, block = found[1]
    assert roi == (slice(4, 5), slice(5, 6), slice(1, 3))
    np.testing.assert_array_equal(block, data[roi])
