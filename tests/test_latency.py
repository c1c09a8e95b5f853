"""Reads that pay for bandwidth, not round trips: many requests in flight at once against a
server that answers late, and no request at all for what the head cache holds.

No wall-clock assertions about speed: concurrency is read off the server (the most requests it
was answering at the same time), request counts off its log, and results are compared with a
run against a server that answers at once. Round trips paid are measured by
``benchmarks/bench_latency.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medmask
from cohort_data import msk_case_bytes
from medmask import MaskArchive, SegmentationMask
from medmask.io import HEAD_GUESS, head_cache, merge_ranges, read_heads
from medmask.synthetic import synthetic_space
from servers import BucketFixture

pytest.importorskip("dask", reason="needs the dask extra")
from medmask.dask import cohort_stats

LATENCY = 0.03


def _upload_cases(s3: BucketFixture, n: int) -> list[str]:
    urls = []
    for i in range(n):
        s3.fs.pipe(s3.path(f"cases/case{i:03d}.msk"), msk_case_bytes(i))
        urls.append(s3.url(f"cases/case{i:03d}.msk"))
    s3.fs.invalidate_cache()
    return urls


def test_the_harness_answers_late_and_counts_requests_in_flight(s3: BucketFixture) -> None:
    s3.fs.pipe(s3.path("x"), b"0123456789")
    s3.server.latency = LATENCY
    s3.log.clear()
    started = time.monotonic()
    s3.fs.cat_file(s3.path("x"), start=2, end=5)
    # a lower bound of a sleep (deterministic), not a speed goal
    assert time.monotonic() - started >= LATENCY
    s3.fs.cat_ranges([s3.path("x")] * 8, list(range(8)), list(range(1, 9)))
    assert s3.log.count("GET") == 9
    assert s3.log.max_in_flight >= 4  # s3fs sent them together; each waited LATENCY


def test_cohort_stats_batches_heads_concurrently(s3: BucketFixture) -> None:
    urls = _upload_cases(s3, 96)
    options = s3.storage_options
    s3.log.clear()
    at_once = cohort_stats(f"s3://{s3.bucket}/cases/*.msk", storage_options=options)
    s3.server.latency = LATENCY
    s3.log.clear()
    s3.fs.invalidate_cache()
    far = cohort_stats(urls, storage_options=options, max_concurrency=32)
    gets = s3.log.gets("/cases/")
    assert len(gets) == len(urls)  # exactly one GET per case...
    assert {g.range for g in gets} == {f"bytes=0-{HEAD_GUESS - 1}"}  # ...the head, nothing else
    assert s3.log.max_in_flight >= 8  # ...and many of them in flight at once
    assert far.equals(at_once)  # the same table as from a server that answers at once


def test_one_request_at_a_time_is_what_batching_avoids(s3: BucketFixture) -> None:
    urls = _upload_cases(s3, 24)
    s3.server.latency = LATENCY
    s3.log.clear()
    cohort_stats(urls, storage_options=s3.storage_options, max_concurrency=1)
    serial = s3.log.max_in_flight
    s3.log.clear()
    cohort_stats(urls, storage_options=s3.storage_options, max_concurrency=24)
    assert serial <= 2  # one case per task, two scheduler threads
    assert s3.log.max_in_flight > serial


def test_read_heads_gives_each_source_its_bytes_or_error(s3: BucketFixture, tmp_path: Path) -> None:
    s3.fs.pipe(s3.path("a.msk"), b"A" * 10)
    s3.fs.pipe(s3.path("big.msk"), bytes(range(256)) * 1000)
    (tmp_path / "local.msk").write_bytes(b"L" * 5)
    s3.fs.pipe(s3.path("empty.msk"), b"")
    sources = [
        s3.url("a.msk"),
        s3.url("missing.msk"),
        s3.url("big.msk"),
        tmp_path / "local.msk",
        s3.url("empty.msk"),
        tmp_path / "missing.msk",
    ]
    heads = read_heads(sources, s3.storage_options)
    assert heads[0] == b"A" * 10
    assert isinstance(heads[1], medmask.MaskFileNotFoundError)
    assert "missing.msk" in str(heads[1])
    assert heads[2] == (bytes(range(256)) * 1000)[:HEAD_GUESS]
    assert heads[3] == b"L" * 5
    assert heads[4] == b""
    assert isinstance(heads[5], medmask.MaskFileNotFoundError)


def test_merged_reads_are_capped_so_they_go_out_concurrently() -> None:
    ranges = [(i * 1000, i * 1000 + 1000) for i in range(100)]  # 100 KB, all adjacent
    assert merge_ranges(ranges) == [(0, 100_000)]
    capped = merge_ranges(ranges, max_size=30_000)
    assert capped == [(0, 30_000), (30_000, 60_000), (60_000, 90_000), (90_000, 100_000)]
    assert merge_ranges([(0, 50), (10, 80_000)], max_size=100) == [(0, 80_000)]  # overlap


# --- the head cache ----------------------------------------------------------------------------


def _organs_archive(shared_data: Path, path: Path, *, appended: bool) -> list[str]:
    """TotalSegmentator's 117 organs, one member each, plus a noise member whose chunks lie
    beyond the first read; written in one go (directory at the front, inside the first read)
    or with the noise appended (the directory then at the end, outside it). Returns the
    member names."""
    from medmask.interop.folders import pack_folder

    pack_folder(shared_data / "totalseg" / "organs", path,
                mapping=shared_data / "totalseg" / "labels_total.json")  # fmt: skip
    with MaskArchive(path) as packed:
        space = packed.space
        organs = {  # one member per structure: 117 members
            name: SegmentationMask(packed.load_structure(name), {name: 1}, space)
            for name in packed.structures()
        }
    assert space is not None
    shape = tuple(int(s) for s in space.shape)
    noise = np.random.default_rng(0).integers(0, 200, shape).astype(np.uint8)
    noise_mask = SegmentationMask(noise, {f"n{v}": v for v in range(1, 200)}, space)
    with MaskArchive(path, "w", space=space) as archive:
        for name, mask in organs.items():
            archive.add_segmask(mask, name)
        if not appended:
            archive.add_segmask(noise_mask, "noise")
    if appended:
        with MaskArchive(path, "a") as archive:
            archive.add_segmask(noise_mask, "noise")
    assert path.stat().st_size > 2 * HEAD_GUESS
    return [*organs, "noise"]


@pytest.fixture
def archive_url(s3: BucketFixture, shared_data: Path, tmp_path: Path) -> str:
    _organs_archive(shared_data, tmp_path / "organs.mska", appended=False)
    s3.fs.put_file(str(tmp_path / "organs.mska"), s3.path("organs.mska"))
    return s3.url("organs.mska")


def _replace_with_another_layout(s3: BucketFixture, url: str, tmp_path: Path) -> list[str]:
    """Rewrite the object behind medmask's back: the same members, in reverse order."""
    other = tmp_path / "other.mska"
    with MaskArchive(url, storage_options=s3.storage_options) as old:
        members = old.all_names()
        with MaskArchive(other, "w", space=old.space) as out:
            for name in reversed(members):
                out.add_segmask(old.load_segmask(name), name, chunks=5)
    s3.fs.put_file(str(other), s3.path(url.split("/", 3)[-1]))
    return list(reversed(members))


def test_one_structure_cold_then_warm(s3: BucketFixture, archive_url: str) -> None:
    s3.server.latency = LATENCY
    head_cache.enable()
    s3.log.clear()
    with MaskArchive(archive_url, storage_options=s3.storage_options) as archive:
        assert len(archive.all_names()) == 118
        liver = archive.load_structure("liver")  # inside the first read
        noise = archive.load_structure("n5")  # beyond it
    cold = s3.log.gets("organs.mska")
    assert len(cold) == 2  # the head (directory and the organs included), the noise member
    s3.log.clear()
    with MaskArchive(archive_url, storage_options=s3.storage_options) as archive:
        assert np.array_equal(archive.load_structure("liver"), liver)
        assert np.array_equal(archive.load_structure("n5"), noise)
        assert archive.structures()["spleen"]
    assert s3.log.requests == []  # warm: nothing asked of the store
    assert head_cache.hits >= 2


def test_without_the_cache_every_open_reads(s3: BucketFixture, archive_url: str) -> None:
    s3.log.clear()
    for _ in range(2):
        with MaskArchive(archive_url, storage_options=s3.storage_options) as archive:
            archive.load_structure("n5")
    assert len(s3.log.gets("organs.mska")) == 4


def test_a_replaced_object_is_an_error_never_stale_voxels(
    s3: BucketFixture, archive_url: str, tmp_path: Path
) -> None:
    head_cache.enable(ranges=False)
    with MaskArchive(archive_url, storage_options=s3.storage_options) as archive:
        archive.load_structure("n5")  # the noise member: its chunks lie beyond the head
    reordered = _replace_with_another_layout(s3, archive_url, tmp_path)
    with (
        MaskArchive(archive_url, storage_options=s3.storage_options) as stale,
        pytest.raises(medmask.ChecksumError, match=r"noise.*checksum mismatch"),
    ):
        stale.load_structure("n5")  # the cached directory, the new object's bytes
    head_cache.clear()
    with MaskArchive(archive_url, storage_options=s3.storage_options) as fresh:
        assert fresh.load_structure("n5").any()
        assert fresh.all_names() == reordered


def test_a_stale_directory_outside_the_head_is_read_afresh(
    s3: BucketFixture, shared_data: Path, tmp_path: Path
) -> None:
    _organs_archive(shared_data, tmp_path / "appended.mska", appended=True)
    s3.fs.put_file(str(tmp_path / "appended.mska"), s3.path("appended.mska"))
    url = s3.url("appended.mska")
    head_cache.enable(ranges=False)  # (cached ranges would keep serving the old object)
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        archive.load_structure("n5")
    reordered = _replace_with_another_layout(s3, url, tmp_path)
    with MaskArchive(url, storage_options=s3.storage_options) as again:
        # the cached head's directory lies beyond it: its bytes no longer check out, so the
        # reader drops the cached head and reads the object afresh
        assert again.all_names() == reordered
        assert again.load_structure("n5").any()


def test_medmask_writes_drop_what_they_replace(s3: BucketFixture) -> None:
    head_cache.enable()
    url = s3.url("m.msk")
    first = SegmentationMask(np.ones((2, 3, 4), np.uint8), {"a": 1})
    second = SegmentationMask(np.full((2, 3, 4), 2, np.uint8), {"b": 2})
    medmask.save_mask(first, url, storage_options=s3.storage_options)
    assert medmask.load_mask(url, storage_options=s3.storage_options) == first
    medmask.save_mask(second, url, storage_options=s3.storage_options)
    s3.log.clear()
    assert medmask.load_mask(url, storage_options=s3.storage_options) == second
    assert len(s3.log.gets("m.msk")) == 1


def test_entries_expire_and_limits_hold(s3: BucketFixture) -> None:
    url = s3.url("m.msk")
    medmask.save_mask(
        SegmentationMask(np.ones((2, 3, 4), np.uint8), {"a": 1}), url,
        storage_options=s3.storage_options,
    )  # fmt: skip
    head_cache.enable(ttl=0.0)  # every entry stale at once
    for _ in range(2):
        medmask.load_mask(url, storage_options=s3.storage_options)
    assert head_cache.hits == 0
    head_cache.enable(max_entries=1)
    head_cache.put(("t", "a"), b"x")
    head_cache.put(("t", "b"), b"y")
    assert head_cache.get(("t", "a")) is None
    assert head_cache.get(("t", "b")) == b"y"
    with pytest.raises(medmask.InvalidValueError):
        head_cache.enable(max_entries=-1)


def test_zarr_store_reads_through_the_cache(s3: BucketFixture, archive_url: str) -> None:
    from medmask.zarr_store import open_zarr

    head_cache.enable()
    options: dict[str, Any] = s3.storage_options
    first = open_zarr(archive_url, storage_options=options)["structures/liver"][...]
    s3.log.clear()
    again = open_zarr(archive_url, storage_options=options)["structures/liver"][...]
    assert np.array_equal(first, again)
    assert s3.log.requests == []


def test_pack_folder_fetches_a_remote_folder_concurrently(
    s3: BucketFixture, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medmask.interop.folders import pack_folder

    organs = shared_data / "totalseg" / "organs"
    names = sorted(p.name for p in organs.glob("*.nii.gz"))[:24]
    for name in names:
        s3.fs.put_file(str(organs / name), s3.path(f"case/{name}"))
    s3.server.latency = LATENCY
    s3.log.clear()
    report = pack_folder(
        s3.url("case/"), tmp_path / "case.mska", storage_options=s3.storage_options, progress=True
    )
    assert sum(len(v) for v in report.layers.values()) == len(names)
    bars = capsys.readouterr().err
    assert f"fetching:   0%|          | 0/{len(names)}" in bars  # tqdm redraws at most
    # every 0.1 s, so later states may not be drawn; read_many's counts are tested below
    gets = [g for g in s3.log.gets("/case/") if g.path.endswith(".nii.gz")]
    assert len(gets) == len(names)  # one GET per file...
    assert s3.log.max_in_flight >= 8  # ...many in flight at once
    with MaskArchive(tmp_path / "case.mska") as archive:
        from medmask.interop.nifti import read_nifti

        expected, _ = read_nifti(organs / names[0])
        got = archive.load_structure(names[0].removesuffix(".nii.gz"))
        assert np.array_equal(got, expected != 0)


def test_read_infos_of_many_files_concurrently(s3: BucketFixture) -> None:
    urls = _upload_cases(s3, 20)
    s3.server.latency = LATENCY
    s3.log.clear()
    infos = medmask.read_infos(urls, storage_options=s3.storage_options)
    assert len(s3.log.gets("/cases/")) == 20
    assert s3.log.max_in_flight >= 8
    s3.server.latency = 0.0
    for url, info in zip(urls, infos, strict=True):
        one = medmask.read_info(url, storage_options=s3.storage_options)
        assert (info.name, info.labels, info.shape) == (one.name, one.labels, one.shape)
    with pytest.raises(medmask.MaskFileNotFoundError, match="nope"):
        medmask.read_infos([*urls[:2], s3.url("nope.msk")], storage_options=s3.storage_options)


def test_read_many_reports_progress_per_group(s3: BucketFixture, tmp_path: Path) -> None:
    from medmask.io import read_many

    urls = []
    for i in range(10):
        s3.fs.pipe_file(s3.path(f"blobs/{i}.bin"), bytes([i]) * (100 + i))
        urls.append(s3.url(f"blobs/{i}.bin"))
    local = tmp_path / "local.bin"
    local.write_bytes(b"here")
    s3.server.latency = LATENCY
    s3.log.clear()
    done: list[int] = []
    blobs = read_many(
        [*urls, str(local), s3.url("blobs/missing.bin")],
        s3.storage_options,
        max_bytes=1000,
        max_concurrency=4,
        on_done=done.append,
    )
    assert blobs[:10] == [bytes([i]) * (100 + i) for i in range(10)]
    assert blobs[10] == b"here"
    assert isinstance(blobs[11], medmask.MaskFileNotFoundError)
    assert "missing.bin" in str(blobs[11])
    assert sum(done) == 12  # every source reported once
    assert max(done) == 4  # remote ones in groups of max_concurrency...
    assert 2 <= s3.log.max_in_flight <= 4  # ...each group in flight together


@pytest.mark.parametrize("appended", [False, True], ids=["written-once", "appended"])
def test_a_directory_larger_than_the_first_read_costs_one_more_get(
    s3: BucketFixture, tmp_path: Path, appended: bool
) -> None:
    space = synthetic_space(seed=1)
    shape = tuple(int(s) for s in space.shape)
    rng = np.random.default_rng(1)
    path = tmp_path / "wide.mska"
    members = {}
    for m in range(12):  # 12 members x 250 random names: a directory of a few hundred KiB
        data = rng.integers(0, 251, shape, dtype=np.uint8)
        labels = {f"{v:03d}_{rng.bytes(24).hex()}": v for v in range(1, 251)}
        members[f"m{m:02d}"] = SegmentationMask(data, labels, space)
    names = list(members)
    with MaskArchive(path, "w", space=space) as archive:
        for name in names[: 6 if appended else None]:
            archive.add_segmask(members[name], name)
    if appended:
        with MaskArchive(path, "a") as archive:
            for name in names[6:]:
                archive.add_segmask(members[name], name)
    s3.fs.put_file(str(path), s3.path("wide.mska"))
    s3.server.latency = LATENCY
    s3.log.clear()
    with MaskArchive(s3.url("wide.mska"), storage_options=s3.storage_options) as remote:
        directory_gets = s3.log.count("GET")
        directory_bytes = s3.log.bytes_sent()
        got = remote.load_segmask("m07")
    assert directory_bytes > 2 * HEAD_GUESS  # the directory really is beyond the first read
    assert directory_gets == 2  # the first read, then the rest of the directory in one GET
    assert s3.log.count("GET") == 3  # and the member
    assert np.array_equal(got.data, members["m07"].data)
