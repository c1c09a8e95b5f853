"""Round trips paid for patches and whole members on the local S3 server: GETs (and HEADs,
counted apart) from the server's own request log, never times.

A 0.8 mm-like torso phantom is stored as ``.msk`` with 32^3, 64^3 and the default chunks;
random 96^3 patches are read with ``load_mask(roi=)`` and through ``open_zarr``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medmask
from medmask import MaskFile, SegmentationMask
from medmask.io import HEAD_GUESS
from medmask.phantom import torso_phantom
from medmask.zarr_store import open_zarr
from servers import BucketFixture

SHAPE = (192, 256, 256)
PATCH = 96
CHUNKS = {"32": (32, 32, 32), "64": (64, 64, 64), "default": None}


@pytest.fixture(scope="module")
def phantom_mask() -> SegmentationMask:
    phantom = torso_phantom(SHAPE, (1.25, 1.4, 1.4))
    data = phantom.labelmap.copy()
    rng = np.random.default_rng(0)
    speckle = rng.random(data.shape) < 0.01  # chunks of a few KiB, as a real 0.8 mm map's
    values = np.array(sorted(phantom.labels.values()), dtype=data.dtype)
    data[speckle] = rng.choice(values, int(speckle.sum()))
    return SegmentationMask(data, phantom.labels, phantom.space)


@pytest.fixture(scope="module")
def stored(phantom_mask: SegmentationMask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("round-trips")
    for name, chunks in CHUNKS.items():
        medmask.save_mask(phantom_mask, folder / f"c{name}.msk", chunks=chunks)
    return folder


def _upload(s3: BucketFixture, stored: Path, name: str) -> str:
    s3.fs.put_file(str(stored / f"c{name}.msk"), s3.path(f"c{name}.msk"))
    return s3.url(f"c{name}.msk")


def _patches(n: int, seed: int = 0) -> list[tuple[slice, slice, slice]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        z, y, x = (int(rng.integers(0, s - PATCH + 1)) for s in SHAPE)
        out.append((slice(z, z + PATCH), slice(y, y + PATCH), slice(x, x + PATCH)))
    return out


@pytest.mark.parametrize("chunking", ["32", "64", "default"])
def test_a_random_patch_costs_two_gets_then_one(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask, chunking: str
) -> None:
    url = _upload(s3, stored, chunking)
    with MaskFile(stored / f"c{chunking}.msk") as local:
        grid = local.descriptor.grid
        assert local.file_size is not None
        assert local.file_size > 4 * HEAD_GUESS  # the chunks lie beyond the first read
    for roi in _patches(6):
        s3.log.clear()
        patch = medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
        assert np.array_equal(patch.data, phantom_mask.data[roi])
        # the head, then every chunk of the patch merged into one ranged GET; no HEAD
        assert s3.log.count("GET") <= 2, s3.log.summary()
        assert s3.log.count("HEAD") == 0, s3.log.summary()
    if chunking != "default":
        assert all(g > 2 for g in grid)  # a 96^3 patch spans 8 to 27 chunks
    with MaskFile(url, storage_options=s3.storage_options) as opened:
        for roi in _patches(6, seed=1):
            s3.log.clear()
            assert np.array_equal(opened.read_array(roi), phantom_mask.data[roi])
            assert s3.log.count("GET") <= 1, s3.log.summary()  # the head is read once


def test_the_gap_setting_decides_the_gets(s3: BucketFixture, stored: Path) -> None:
    url = _upload(s3, stored, "32")
    roi = _patches(1, seed=2)[0]
    with MaskFile(url, storage_options=s3.storage_options) as opened:
        s3.log.clear()
        opened.read_array(roi)
        merged = s3.log.count("GET")
        s3.log.clear()
        with medmask.config.set(range_gap_remote=medmask.io.MERGE_GAP):
            opened.read_array(roi)
        small_gap = s3.log.count("GET")
    assert merged == 1
    assert small_gap > 2  # what a 4 KiB gap costs: one GET per run of chunks


@pytest.mark.parametrize("chunking", ["32", "64", "default"])
def test_open_zarr_of_a_whole_member_costs_at_most_load_mask_plus_one(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask, chunking: str
) -> None:
    url = _upload(s3, stored, chunking)
    s3.log.clear()
    assert medmask.load_mask(url, storage_options=s3.storage_options) == phantom_mask
    load_gets = s3.log.count("GET")
    s3.log.clear()
    data = open_zarr(url, storage_options=s3.storage_options)["mask"][...]
    assert np.array_equal(data, phantom_mask.data)
    zarr_gets = s3.log.count("GET")
    assert zarr_gets <= load_gets + 1, s3.log.summary()
    assert s3.log.count("HEAD") == 0, s3.log.summary()
    with MaskFile(stored / f"c{chunking}.msk") as local:
        payload = int(local.index["length"].sum())
    # read ahead never strays outside the member: each chunk's bytes travel once at most
    assert s3.log.bytes_sent() <= HEAD_GUESS + payload


def test_open_zarr_patches_coalesce_and_read_ahead_within_the_patch(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask
) -> None:
    url = _upload(s3, stored, "32")
    array = open_zarr(url, storage_options=s3.storage_options)["mask"]
    for roi in _patches(5, seed=3):
        s3.log.clear()
        assert np.array_equal(array[roi], phantom_mask.data[roi])
        # 27 to 64 chunks in waves of zarr's 10 requests: 1 GET for the first wave and what
        # follows it, at most 1 more for the rest
        assert 1 <= s3.log.count("GET") <= 2, s3.log.summary()


def test_coalesced_chunks_are_still_checked_one_by_one(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask
) -> None:
    data = bytearray((stored / "c64.msk").read_bytes())
    with MaskFile(stored / "c64.msk") as local:
        span = local.chunk_byte_range(5)
    assert span is not None
    data[span[0] + (span[1] - span[0]) // 2] ^= 0xFF  # one flipped byte in one chunk
    s3.fs.pipe_file(s3.path("bad.msk"), bytes(data))
    array = open_zarr(s3.url("bad.msk"), storage_options=s3.storage_options)["mask"]
    with pytest.raises(medmask.ChecksumError, match=r"bad\.msk.*chunk 5"):
        array[...]
    with pytest.raises(medmask.ChecksumError, match=r"bad\.msk.*chunk 5"):
        array[0:64, 64:128, 64:128]  # chunk 5 alone (0, 1, 1): not a wave, no read ahead
    assert np.array_equal(array[:64, :64, :64], phantom_mask.data[:64, :64, :64])


def test_with_the_head_cache_a_patch_costs_one_get(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask
) -> None:
    from medmask.io import head_cache

    url = _upload(s3, stored, "64")
    head_cache.enable(ranges=False)
    medmask.load_mask(url, roi=_patches(1, seed=4)[0], storage_options=s3.storage_options)
    for roi in _patches(4, seed=5):
        s3.log.clear()
        patch = medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
        assert np.array_equal(patch.data, phantom_mask.data[roi])
        assert s3.log.count("GET") <= 1, s3.log.summary()  # the chunks: the head is kept
        assert s3.log.count("HEAD") == 0


# --- re-using a head kept with its ETag (S3, on by default) -------------------------------------


def test_load_mask_reuses_a_head_pinned_by_its_etag(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask
) -> None:
    url = _upload(s3, stored, "64")
    rois = _patches(5, seed=6)
    s3.log.clear()
    medmask.load_mask(url, roi=rois[0], storage_options=s3.storage_options)
    assert s3.log.count("GET") == 2  # the head, the chunks
    for roi in rois[1:]:
        s3.log.clear()
        patch = medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
        assert np.array_equal(patch.data, phantom_mask.data[roi])
        # the chunks only: their GET answers with the object's ETag, which must be the head's
        assert s3.log.count("GET") == 1, s3.log.summary()
        assert s3.log.count("HEAD") == 0


def test_a_replaced_object_is_read_afresh_never_from_the_kept_head(
    s3: BucketFixture, stored: Path, phantom_mask: SegmentationMask
) -> None:
    url = _upload(s3, stored, "64")
    roi = _patches(1, seed=7)[0]
    medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)  # keeps the head
    other = SegmentationMask(
        np.where(phantom_mask.data > 0, 1, 0).astype(np.uint8), {"body": 1}, phantom_mask.space
    )
    medmask.save_mask(other, stored / "other.msk", chunks=(32, 32, 32))
    s3.fs.put_file(str(stored / "other.msk"), s3.path("c64.msk"))  # behind medmask's back
    s3.log.clear()
    again = medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
    assert again.mapping == other.mapping
    assert np.array_equal(again.data, other.data[roi])
    # the chunk GET found another ETag: its bytes were dropped, then head and chunks afresh
    assert s3.log.count("GET") == 3, s3.log.summary()
    s3.log.clear()
    medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
    assert s3.log.count("GET") == 1  # the new head is kept


def test_a_read_inside_the_kept_head_still_checks_the_etag(
    s3: BucketFixture, tmp_path: Path
) -> None:
    small = SegmentationMask(np.ones((4, 5, 6), np.uint8), {"a": 1})
    changed = SegmentationMask(np.full((4, 5, 6), 2, np.uint8), {"b": 2})
    url = s3.url("small.msk")
    medmask.save_mask(small, url, storage_options=s3.storage_options)
    assert medmask.load_mask(url, storage_options=s3.storage_options) == small
    s3.log.clear()
    assert medmask.load_mask(url, storage_options=s3.storage_options) == small
    assert [g.range for g in s3.log.gets()] == ["bytes=0-0"]  # one byte, for its ETag
    medmask.save_mask(changed, tmp_path / "changed.msk")
    s3.fs.put_file(str(tmp_path / "changed.msk"), s3.path("small.msk"))
    assert medmask.load_mask(url, storage_options=s3.storage_options) == changed


def test_writes_and_clear_drop_kept_heads(s3: BucketFixture, stored: Path) -> None:
    from medmask.io import head_cache

    url = _upload(s3, stored, "64")
    roi = _patches(1, seed=8)[0]
    medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
    head_cache.clear()
    s3.log.clear()
    medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
    assert s3.log.count("GET") == 2  # nothing kept: the head again
    head_cache.keep_versioned = False
    try:
        head_cache.clear()
        medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
        s3.log.clear()
        medmask.load_mask(url, roi=roi, storage_options=s3.storage_options)
        assert s3.log.count("GET") == 2  # switched off
    finally:
        head_cache.keep_versioned = True
