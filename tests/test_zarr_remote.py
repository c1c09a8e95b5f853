"""``open_zarr`` on the local S3 and GCS servers: a 117-member archive, request counts, and an
object replaced between opening and reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.interop.nifti import read_nifti
from medmask.io import HEAD_GUESS
from medmask.zarr_store import open_zarr
from servers import BucketFixture

# every s3 test here runs twice: against a server that answers at once and one 20 ms away
S3_LATENCIES = (0.0, 0.02)


@pytest.fixture(scope="module")
def organs_archive(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """117 members, one per TotalSegmentator organ file, z-slab chunks; noise members first so
    the organs' chunks lie beyond the first 64 KiB read."""
    files = sorted((shared_data / "totalseg" / "organs").glob("*.nii.gz"))
    assert len(files) == 117
    path = tmp_path_factory.mktemp("zarr-remote") / "organs.mska"
    _, space = read_nifti(files[0])
    rng = np.random.default_rng(0)
    with MaskArchive(path, "w", space=space) as archive:
        for i in range(2):
            noise = rng.integers(0, 200, tuple(int(s) for s in space.shape), dtype=np.uint8)
            mapping = {f"noise{i}_{v}": v for v in range(1, 200)}
            archive.add_segmask(SegmentationMask(noise, mapping, space), f"noise{i}")
        for file in files:
            array, _ = read_nifti(file)
            name = file.name.removesuffix(".nii.gz")
            archive.add_segmask(SegmentationMask(array != 0, {name: 1}, space), name, chunks=6)
    assert path.stat().st_size > 3 * HEAD_GUESS
    return path


def _liver_chunk_ranges(path: Path) -> set[tuple[int, int]]:
    with MaskArchive(path) as archive:
        member = archive._directory.member("liver")
        assert member is not None
        index = member.index
    return {
        (int(o), int(o + n)) for o, n in zip(index["offset"], index["length"], strict=True) if n
    }


def test_s3_open_zarr_reads_only_the_directory_and_the_member(
    s3: BucketFixture, organs_archive: Path
) -> None:
    s3.fs.put_file(str(organs_archive), s3.path("organs.mska"))
    s3.log.clear()
    group = open_zarr(s3.url("organs.mska"), storage_options=s3.storage_options)
    assert len(group.attrs["medmask"]["members"]) == 119
    assert s3.log.get_ranges("organs.mska") == [(0, HEAD_GUESS)]  # the directory: one ranged GET
    with MaskArchive(organs_archive) as archive:
        expected_member = archive.load_segmask("liver").data
        expected_structure = archive.get_binary_mask_by_names("liver")
    s3.log.clear()
    np.testing.assert_array_equal(group["liver"][...], expected_member)
    wanted = _liver_chunk_ranges(organs_archive)
    got = s3.log.get_ranges("organs.mska")
    # zarr's concurrent chunk requests coalesced into one GET of exactly the member's chunks
    assert got == [(min(wanted)[0], max(wanted)[1])], s3.log.summary()
    assert sum(e - s for s, e in wanted) == max(wanted)[1] - min(wanted)[0]  # nothing else
    assert not any(r.method == "HEAD" for r in s3.log.requests)
    s3.log.clear()
    structure = group["structures/liver"][...]
    np.testing.assert_array_equal(structure, expected_structure)
    z0, z1 = np.nonzero(expected_structure.any(axis=(1, 2)))[0][[0, -1]]
    # the member's chunks within the liver's bbox, each once: fetched together (one merged
    # read) to check the bbox holds the stored count, then served to zarr from memory
    in_bbox = sorted(wanted)[z0 // 6 : z1 // 6 + 1]
    assert len(in_bbox) == len({z // 6 for z in range(z0, z1 + 1)})
    assert s3.log.get_ranges("organs.mska") == [(in_bbox[0][0], in_bbox[-1][1])], s3.log.summary()
    assert sum(e - s for s, e in in_bbox) == in_bbox[-1][1] - in_bbox[0][0]  # contiguous


def test_gcs_open_zarr_request_count(gcs: BucketFixture, organs_archive: Path) -> None:
    gcs.fs.put_file(str(organs_archive), gcs.path("organs.mska"))
    gcs.log.clear()
    group = open_zarr(gcs.url("organs.mska"), storage_options=gcs.storage_options)
    with MaskArchive(organs_archive) as archive:
        expected = archive.load_segmask("liver").data
    np.testing.assert_array_equal(group["liver"][...], expected)
    gets = gcs.log.gets("organs.mska")
    assert len(_liver_chunk_ranges(organs_archive)) > 1
    assert len(gets) == 2, gcs.log.summary()  # the directory, the member's chunks coalesced
    assert len(gcs.log.requests) == len(gets), gcs.log.summary()  # nothing but those GETs


def _replaced(bucket: BucketFixture, organs_archive: Path) -> None:
    key = "case.mska"
    bucket.fs.put_file(str(organs_archive), bucket.path(key))
    group = open_zarr(bucket.url(key), storage_options=bucket.storage_options)
    before = group["liver"][...]
    other = Path(str(organs_archive) + ".other")
    with (
        MaskArchive(organs_archive) as archive,
        MaskArchive(other, "w", space=archive.space) as out,
    ):
        for name in archive.all_names()[::-1]:  # the same members, another layout
            out.add_segmask(archive.load_segmask(name), name, chunks=6)
    bucket.fs.put_file(str(other), bucket.path(key))
    bucket.fs.invalidate_cache()
    with pytest.raises(medmask.MedmaskError, match=r"case\.mska.*\[spleen\].*(checksum|truncated)"):
        group["spleen"][...]
    np.testing.assert_array_equal(
        open_zarr(bucket.url(key), storage_options=bucket.storage_options)["liver"][...], before
    )


def test_s3_object_replaced_between_open_and_read(s3: BucketFixture, organs_archive: Path) -> None:
    _replaced(s3, organs_archive)


def test_gcs_object_replaced_between_open_and_read(
    gcs: BucketFixture, organs_archive: Path
) -> None:
    _replaced(gcs, organs_archive)


def test_memory_url_and_storage_options(memory_fs: Any, organs_archive: Path) -> None:
    memory_fs.pipe("/m/organs.mska", organs_archive.read_bytes())
    group = open_zarr("memory://m/organs.mska")
    with MaskArchive(organs_archive) as archive:
        np.testing.assert_array_equal(group["aorta"][...], archive.load_segmask("aorta").data)


def test_s3_get_partial_values_is_one_request(s3: BucketFixture, organs_archive: Path) -> None:
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    s3.fs.put_file(str(organs_archive), s3.path("batch.mska"))
    store = medmask.ArchiveStore(s3.url("batch.mska"), storage_options=s3.storage_options)
    assert store.directory.kind == "mska"
    every = store.layout.keys()
    keys = [k for k in every if k.startswith("liver/c/")]
    wanted = _liver_chunk_ranges(organs_archive)
    assert len(keys) == len(wanted) > 1
    s3.log.clear()
    got = sync(
        store.get_partial_values(
            default_buffer_prototype(), [(k, RangeByteRequest(0, 4)) for k in keys]
        )
    )
    # the member's chunks lie back to back: one merged ranged GET for all of them
    assert s3.log.get_ranges("batch.mska") == [(min(wanted)[0], max(wanted)[1])], s3.log.summary()
    data = organs_archive.read_bytes()
    assert sorted(b.to_bytes() for b in got if b is not None) == sorted(
        data[start : start + 4] for start, _ in wanted
    )
