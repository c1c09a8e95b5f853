"""Files with valid checksums and lying contents, and writers that must agree with readers
(issue 7, items 2, 4, 6 and 7)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import crafted
import numpy as np
import pytest
from spacetransformer import Space

import medmask
from damaged_archives import commit_directory
from medmask import (
    AllocationLimitError,
    ChecksumError,
    FormatError,
    MaskArchive,
    MaskFile,
    SegmentationMask,
    TruncatedFileError,
)
from medmask.format.container import HEADER_SIZE, MAX_METADATA_SIZE
from medmask.format.mska import (
    SLOTS_SIZE,
    valid_slots,
)

SPACE = Space(shape=(8, 12, 10), spacing=(2.0, 1.0, 1.0))


def _mask(seed: int, labels: int = 3) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, labels + 1, SPACE.shape, dtype=np.uint8)
    return SegmentationMask(data, {f"s{seed}_{v}": v for v in range(1, labels + 1)}, SPACE)


# --- decoded values and statistics (item 7) -----------------------------------------------------


def _lying_msk(tmp_path: Path, labels: list[dict[str, Any]], array: np.ndarray) -> Path:
    meta = crafted.descriptor(array.shape, labels=labels)
    path = tmp_path / "lying.msk"
    path.write_bytes(crafted.msk(meta, [crafted.labels_stream(array)]))
    return path


@pytest.mark.parametrize(
    ("listed", "present"),
    [([1], [1, 2]), ([1, 3], [1, 2, 3]), ([5, 9], [5, 7, 9])],
    ids=["above-largest", "gap", "gap-no-1"],
)
def test_values_no_label_lists_are_a_format_error(
    tmp_path: Path, listed: list[int], present: list[int]
) -> None:
    array = np.zeros((4, 5, 6), np.uint8)
    for i, value in enumerate(present):
        array[i, i, i] = value
    labels = [{"name": f"v{v}", "value": v, "count": 0, "bbox": None} for v in listed]
    path = _lying_msk(tmp_path, labels, array)
    unlisted = sorted(set(present) - set(listed))
    with pytest.raises(FormatError, match=rf"lying\.msk.*values \[{unlisted[0]}"):
        medmask.load_mask(path)
    # the raw voxels stay readable for forensics, and verify() names the problem
    with MaskFile(path) as f:
        np.testing.assert_array_equal(f.read_array(), array)
        problems = f.verify()
    assert any(f"values {unlisted}" in p for p in problems), problems


def test_verify_reports_lying_counts_and_bboxes(tmp_path: Path) -> None:
    array = np.zeros((4, 5, 6), np.uint8)
    array[1:3, 2, 2:5] = 1
    labels = [  # statistics that could be true (format.md section 2), but are not
        {"name": "liver", "value": 1, "count": 9, "bbox": [[0, 3], [2, 2], [2, 4]]},
        {"name": "ghost", "value": 2, "count": 5, "bbox": [[0, 0], [0, 0], [0, 4]]},
    ]
    path = _lying_msk(tmp_path, labels, array)
    assert medmask.load_mask(path).label_counts() == {"liver": 6, "ghost": 0}  # loads fine
    with MaskFile(path) as f:
        problems = f.verify()
    assert len(problems) == 4, problems
    assert "'liver' (value 1) has 6 voxels; the metadata says 9" in problems[0]
    assert "((1, 2), (2, 2), (2, 4)); the metadata says ((0, 3), (2, 2), (2, 4))" in problems[1]
    assert "'ghost' (value 2) has 0 voxels; the metadata says 5" in problems[2]
    assert (
        "'ghost' (value 2) has bbox None; the metadata says ((0, 0), (0, 0), (0, 4))"
        in (problems[3])
    )


def test_verify_of_sound_files_and_archives_is_empty(tmp_path: Path) -> None:
    medmask.save_mask(_mask(1), tmp_path / "ok.msk")
    with MaskFile(tmp_path / "ok.msk") as f:
        assert f.verify() == []
    with MaskArchive(tmp_path / "ok.mska", "w") as archive:
        archive.add_segmask(_mask(1), "one")
        archive.add_segmask(_mask(2, labels=1), "two")
    with MaskArchive(tmp_path / "ok.mska") as archive:
        assert archive.verify() == []


def test_archive_verify_reports_every_bad_member(tmp_path: Path) -> None:
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w") as archive:
        for seed in (1, 2, 3):
            archive.add_segmask(_mask(seed), f"m{seed}")
    with MaskArchive(path) as archive:
        m2 = archive._directory.member("m2")
        assert m2 is not None
        start = int(m2.index["offset"][0]) + 70
    data = bytearray(path.read_bytes())
    data[start] ^= 0xFF  # a chunk of m2: caught by its CRC
    path.write_bytes(bytes(data))
    with MaskArchive(path) as archive:
        problems = archive.verify()
        assert len(problems) == 1, problems
        assert "[m2]" in problems[0]
        assert "checksum" in problems[0]
        with pytest.raises(ChecksumError):
            archive.load_segmask("m2")
        assert archive.load_segmask("m3") == _mask(3)


# --- the writer enforces the reader's limits (item 7) --------------------------------------------


def test_huge_attributes_are_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "big.msk"
    with pytest.raises(AllocationLimitError, match="readers' limit"):
        medmask.save_mask(_mask(1), path, attributes={"blob": "x" * (MAX_METADATA_SIZE + 10)})
    assert not path.exists()
    medmask.save_mask(_mask(1), path, attributes={"blob": "x" * (1 << 20)})  # 1 MiB is fine
    with MaskFile(path) as f:
        assert len(f.metadata["attributes"]["blob"]) == 1 << 20


def test_chunks_readers_would_refuse_are_refused_by_the_writer(tmp_path: Path) -> None:
    mask = SegmentationMask(np.ones((300, 512, 512), bool), {"all": 1})  # one constant chunk
    with pytest.raises(medmask.InvalidValueError, match="voxels per stored byte"):
        medmask.save_mask(mask, tmp_path / "x.msk", chunks=(300, 512, 512), level=1)
    assert not (tmp_path / "x.msk").exists()
    medmask.save_mask(mask, tmp_path / "x.msk")  # the default chunks are always readable
    assert medmask.load_mask(tmp_path / "x.msk").data.all()
    # ... which is the reader's rule, shown on a hand-made file with that chunk
    shape = (1024, 1024, 128)
    stream = crafted.binary_stream(np.ones((1, 1, 8), bool))
    stream = stream[:8] + (1024).to_bytes(4, "little") + stream[12:]  # not decodable anyway
    meta = crafted.descriptor(shape, dtype="bool", codec="medmask.binary")
    path = tmp_path / "reader.msk"
    path.write_bytes(crafted.msk(meta, [stream]))
    with pytest.raises(AllocationLimitError, match="claims 134,217,728 voxels"):
        medmask.load_mask(path)


# --- archives: damaged directories (item 2) and lying directory_regions (item 4) ------------------


def _archive_with(tmp_path: Path) -> Path:
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_mask(1), "m1")
        archive.add_segmask(_mask(2), "m2")
    return path


@pytest.mark.parametrize("where", ["member-payload", "slots", "past-eof", "overlapping"])
def test_lying_directory_regions_never_overwrite_members(tmp_path: Path, where: str) -> None:
    path = _archive_with(tmp_path)
    with MaskArchive(path) as archive:
        m1 = archive._directory.member("m1")
        assert m1 is not None
        first = int(m1.index["offset"][0])
    size = path.stat().st_size
    regions = {
        "member-payload": ((first, 1 << 16),),
        "slots": ((0, 8192),),
        "past-eof": ((size - 10, 1 << 20),),
        "overlapping": ((SLOTS_SIZE, 4096), (SLOTS_SIZE + 100, 4096)),
    }[where]
    commit_directory(path, lambda d: dataclasses.replace(d, regions=regions))
    with MaskArchive(path, "a") as archive:
        for seed in (3, 4, 5):
            archive.add_segmask(_mask(seed), f"m{seed}")
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["m1", "m2", "m3", "m4", "m5"]
        for seed in (1, 2, 3, 4, 5):
            assert archive.load_segmask(f"m{seed}") == _mask(seed)
        assert archive.verify() == []


def test_newest_directory_past_eof_is_reported(tmp_path: Path) -> None:
    path = _archive_with(tmp_path)
    commit_directory(path, lambda d: d)
    data = path.read_bytes()
    _, newest = valid_slots(data, name="x")[0]
    path.write_bytes(data[: newest.index_offset + 5])  # the directory is cut short
    with pytest.raises(TruncatedFileError, match=r"a\.mska.*generation 2.*recover=True"):
        MaskArchive(path)
    with pytest.warns(medmask.archive.RecoveryWarning):
        archive = MaskArchive(path, recover=True)
    with archive:
        assert archive.generation == 1
        assert archive.load_segmask("m2") == _mask(2)


def test_equal_generations_prefer_slot_0(tmp_path: Path) -> None:
    path = _archive_with(tmp_path)
    commit_directory(path, lambda d: dataclasses.replace(d, members=d.members[:1]))
    data = bytearray(path.read_bytes())
    slot0 = valid_slots(bytes(data), name="x")
    assert [s for s, _ in slot0] == [1, 0]
    generation_1 = dataclasses.replace(slot0[0][1], generation=slot0[1][1].generation)
    data[HEADER_SIZE : 2 * HEADER_SIZE] = generation_1.pack()
    path.write_bytes(bytes(data))
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["m1", "m2"]  # slot 0 wins a tie


# --- storage errors (item 6) --------------------------------------------------------------------


def _replaced_behind_the_reader(url: str, options: dict[str, Any], fs: Any, path: str) -> None:
    big = SegmentationMask(
        np.random.default_rng(0).integers(0, 4, (80, 128, 128), dtype=np.uint8),
        {"a": 1, "b": 2, "c": 3},
    )
    size = medmask.save_mask(big, url, storage_options=options, chunks=4)
    assert size > 200_000  # chunks beyond the first 64 KiB read are fetched later
    with MaskFile(url, storage_options=options) as f:
        fs.pipe_file(path, fs.cat_file(path)[:70_000])  # truncated in place
        with pytest.raises(medmask.MedmaskError, match=r"\.msk") as info:
            f.read_array()
        assert isinstance(info.value, TruncatedFileError | ChecksumError), info.value
        fs.pipe_file(path, b"\x89MSK\r\n\x1a\n" + bytes(100))  # replaced by a tiny object
        with pytest.raises(TruncatedFileError):
            f.read_array()


def test_s3_object_truncated_or_replaced_while_reading(s3: Any) -> None:
    _replaced_behind_the_reader(s3.url("r.msk"), s3.storage_options, s3.fs, s3.path("r.msk"))


def test_gcs_object_truncated_or_replaced_while_reading(gcs: Any) -> None:
    _replaced_behind_the_reader(gcs.url("r.msk"), gcs.storage_options, gcs.fs, gcs.path("r.msk"))


def test_storage_errors_are_wrapped_with_the_cause(tmp_path: Path) -> None:
    class Failing(io.BytesIO):
        def read(self, *args: Any) -> bytes:
            raise OSError(5, "Input/output error")

    buf = Failing(b"x" * 100)
    with pytest.raises(medmask.StorageError, match=r"reading failed.*Input/output error") as info:
        medmask.load_mask(buf)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("field", ["major", "required_flags"])
def test_newest_slot_from_a_newer_writer_is_refused_not_skipped(tmp_path: Path, field: str) -> None:
    """An intact slot this reader cannot use must not make it fall back to (and, appending,
    overwrite) an older generation."""
    path = _archive_with(tmp_path)
    commit_directory(path, lambda d: d)
    data = bytearray(path.read_bytes())
    (slot, newest), (older_slot, older) = valid_slots(bytes(data), name="x")
    future = dataclasses.replace(newest, **{field: 2 if field == "major" else 1 << 7})
    data[slot * HEADER_SIZE : (slot + 1) * HEADER_SIZE] = future.pack()
    path.write_bytes(bytes(data))
    for mode in ("r", "a"):
        with pytest.raises(medmask.UnsupportedVersionError, match=r"a\.mska.*Upgrade medmask"):
            MaskArchive(path, mode)  # type: ignore[arg-type]
    # the same slot as the *older* generation is simply not needed
    stale = dataclasses.replace(older, **{field: 2 if field == "major" else 1 << 7})
    data[slot * HEADER_SIZE : (slot + 1) * HEADER_SIZE] = newest.pack()
    data[older_slot * HEADER_SIZE : (older_slot + 1) * HEADER_SIZE] = stale.pack()
    path.write_bytes(bytes(data))
    with MaskArchive(path) as archive:
        assert archive.generation == newest.generation
