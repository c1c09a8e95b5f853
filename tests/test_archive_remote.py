"""``MaskArchive`` on object storage: requests and bytes per read (moto S3), memory://, GCS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask.config
import medmask.io
from medmask import MaskFileExistsError, SegmentationMask
from medmask.archive import MaskArchive
from medmask.format.mska import ArchiveDirectory, parse_directory, valid_slots
from medmask.interop.folders import pack_folder
from medmask.interop.nifti import read_nifti
from servers import BucketFixture

# every s3 test here runs twice: against a server that answers at once and one 20 ms away
S3_LATENCIES = (0.0, 0.02)

SLACK = 64 << 10  # the first read of an archive is 64 KiB


@pytest.fixture(scope="module")
def organs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from medmask.interop.nifti import read_nifti

    folder = shared_data / "totalseg" / "organs"
    out = tmp_path_factory.mktemp("remote") / "organs.mska"
    pack_folder(folder, out, mapping=shared_data / "totalseg" / "labels_total.json")
    masks = {}
    for f in sorted(folder.glob("*.nii.gz")):
        array, _ = read_nifti(f)
        masks[f.name.removesuffix(".nii.gz")] = array != 0
    return {"path": out, "bytes": out.read_bytes(), "masks": masks}


SPACE = Space(shape=(32, 64, 64), origin=(0.0, 10.0, -20.0), spacing=(1.5, 0.7, 0.7))
N_MEMBERS = 10


def _member(i: int) -> SegmentationMask:
    rng = np.random.default_rng(100 + i)
    data = (rng.random((32, 64, 64)) < 0.25).astype(np.uint8)
    data[4 * (i % 6) : 4 * (i % 6) + 6, 10:40, 5:50] = 2
    return SegmentationMask(data, {f"noise_{i}": 1, f"block_{i}": 2}, SPACE)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Ten members of ~15-25 KB, each cut into 4 chunks of 8 slices."""
    path = tmp_path_factory.mktemp("many") / "many.mska"
    with MaskArchive(path, "w") as archive:
        for i in range(N_MEMBERS):
            archive.add_segmask(_member(i), f"m{i}", chunks=8)
    data = path.read_bytes()
    return {"path": path, "bytes": data, "directory": _directory(data)}


def _directory(data: bytes) -> ArchiveDirectory:
    _, header = valid_slots(data, name="x")[0]
    meta = data[header.metadata_offset : header.metadata_offset + header.metadata_length]
    index = data[header.index_offset : header.index_offset + header.index_length]
    return parse_directory(header, meta, index, name="x")


def _range(header: str | None) -> tuple[int, int]:
    """``bytes=a-b`` -> (a, b + 1)."""
    assert header is not None
    match = re.fullmatch(r"bytes=(\d+)-(\d+)", header)
    assert match, header
    return int(match[1]), int(match[2]) + 1


def _upload(store: BucketFixture, key: str, data: bytes) -> str:
    store.fs.pipe_file(store.path(key), data)
    store.log.clear()
    return store.url(key)


# --- S3: requests per read --------------------------------------------------------------------


def test_s3_cold_open_and_one_structure_is_one_get(
    s3: BucketFixture, organs: dict[str, Any]
) -> None:
    url = _upload(s3, "organs.mska", organs["bytes"])
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        liver = archive.get_binary_mask_by_names(["liver"])
        compressed = archive.info()[0].compressed_bytes
    np.testing.assert_array_equal(liver, organs["masks"]["liver"])
    gets, sent = s3.log.count(method="GET"), s3.log.bytes_sent()
    print(
        f"\nS3 organs cold open + liver: {gets} GET, {s3.log.count(method='HEAD')} HEAD, "
        f"{sent} B (member {compressed} B, archive {len(organs['bytes'])} B)\n{s3.log.summary()}"
    )
    assert gets <= 2, s3.log.summary()
    assert s3.log.count(method="HEAD") == 0, s3.log.summary()
    assert s3.log.count() == gets, s3.log.summary()
    assert sent <= compressed + SLACK


def test_s3_load_segmask_and_read_all(s3: BucketFixture, organs: dict[str, Any]) -> None:
    url = _upload(s3, "organs.mska", organs["bytes"])
    with MaskArchive(organs["path"]) as local:
        expected = local.load_segmask("layer_0")
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert archive.load_segmask("layer_0") == expected
    assert s3.log.count(method="GET") <= 2, s3.log.summary()
    s3.log.clear()
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        everything = archive.read_all_masks()
    assert everything["layer_0"] == expected
    assert s3.log.count(method="GET") <= 3, s3.log.summary()
    assert s3.log.count() == s3.log.count(method="GET"), s3.log.summary()


@pytest.fixture
def exact_gap() -> Iterator[None]:
    """Remote reads merged over the local gap only: the test below checks that exactly the
    chunks asked for travel (the remote default, 256 KiB, merges over skipped chunks)."""
    with medmask.config.set(range_gap_remote=medmask.io.MERGE_GAP):
        yield


@pytest.mark.usefixtures("exact_gap")
def test_s3_loading_one_member_fetches_only_its_ranges(
    s3: BucketFixture, many: dict[str, Any]
) -> None:
    data: bytes = many["bytes"]
    directory: ArchiveDirectory = many["directory"]
    assert len(data) > 2 * SLACK  # most members lie beyond the first read
    url = _upload(s3, "many.mska", data)
    name = "m6"
    member = directory.member(name)
    assert member is not None
    stored = member.index[member.index["length"] > 0]
    start = int(stored["offset"].min())
    end = int((stored["offset"] + stored["length"]).max())
    assert start >= SLACK
    assert end - start == member.compressed_bytes  # a member's chunks are contiguous

    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert s3.log.count(method="GET") == 1, s3.log.summary()  # header + directory
        infos = {i.name: i for i in archive.info()}
        assert s3.log.count(method="GET") == 1, s3.log.summary()
        s3.log.clear()
        assert archive.load_segmask(name) == _member(6)
        (get,) = s3.log.gets()
        print(
            f"\nS3 one of {N_MEMBERS} members ({infos[name].compressed_bytes} B of "
            f"{len(data)} B): {get}"
        )
        assert _range(get.range) == (start, end)
        assert get.bytes_sent == infos[name].compressed_bytes
        assert s3.log.count() == 1, s3.log.summary()

        # a region of interest fetches only the chunks it touches (chunk 2 of 4: slices 16-23)
        s3.log.clear()
        part = archive.load_segmask(name, roi=(slice(17, 20), slice(0, 64), slice(0, 64)))
        np.testing.assert_array_equal(part.data, _member(6).data[17:20])
        (get,) = s3.log.gets()
        chunk = member.index[2]
        assert _range(get.range) == (
            int(chunk["offset"]),
            int(chunk["offset"]) + int(chunk["length"]),
        )

        # structures of two members: only the chunks inside each structure's stored bbox
        # (block_7 spans slices 4-9, chunks 0-1 of m7; noise_8 is everywhere: all of m8)
        s3.log.clear()
        union = archive.get_binary_mask_by_names(["block_7", "noise_8"])
        np.testing.assert_array_equal(union, (_member(7).data == 2) | (_member(8).data == 1))
        m7, m8 = directory.member("m7"), directory.member("m8")
        assert m7 is not None
        assert m8 is not None
        expected = [
            (int(m7.index[0]["offset"]), int(m7.index[1]["offset"] + m7.index[1]["length"])),
            (int(m8.index[0]["offset"]), int(m8.index[3]["offset"] + m8.index[3]["length"])),
        ]
        assert sorted(_range(g.range) for g in s3.log.gets()) == expected, s3.log.summary()
        assert s3.log.count() == 2, s3.log.summary()


def test_s3_117_binary_members_one_member_read(
    s3: BucketFixture, organs: dict[str, Any], tmp_path: Path
) -> None:
    with MaskArchive(organs["path"]) as local:
        space = local.space
    path = tmp_path / "binary.mska"
    with MaskArchive(path, "w", space=space) as archive:
        for name, mask in organs["masks"].items():
            archive.add_segmask(SegmentationMask(mask, {name: 1}, space), name)
    url = _upload(s3, "binary.mska", path.read_bytes())
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert len(archive) == 117
        liver = archive.load_segmask("liver")
        compressed = {i.name: i.compressed_bytes for i in archive.info()}["liver"]
    np.testing.assert_array_equal(liver.data, organs["masks"]["liver"])
    assert liver.bit_depth == 1
    gets, sent = s3.log.count(method="GET"), s3.log.bytes_sent()
    print(
        f"\nS3 117 binary members ({path.stat().st_size} B), cold open + liver "
        f"({compressed} B): {gets} GET, {sent} B"
    )
    assert gets <= 2, s3.log.summary()
    assert s3.log.count() == gets, s3.log.summary()
    assert sent <= compressed + SLACK


def test_s3_read_all_masks_of_many_members(s3: BucketFixture, many: dict[str, Any]) -> None:
    url = _upload(s3, "many.mska", many["bytes"])
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        everything = archive.read_all_masks()
    assert list(everything) == [f"m{i}" for i in range(N_MEMBERS)]
    for i in range(N_MEMBERS):
        assert everything[f"m{i}"] == _member(i)
    gets = s3.log.count(method="GET")
    print(f"\nS3 read_all_masks of {N_MEMBERS} members: {gets} GET, {s3.log.bytes_sent()} B")
    assert gets <= 3, s3.log.summary()
    assert s3.log.bytes_sent() <= len(many["bytes"]) + SLACK


def test_s3_write_directly_is_one_put(s3: BucketFixture, organs: dict[str, Any]) -> None:
    url = s3.url("direct/organs.mska")
    with MaskArchive(organs["path"]) as local:
        layer = local.load_segmask("layer_0")
    with MaskArchive(url, "w", storage_options=s3.storage_options) as archive:
        archive.add_segmask(layer, "layer_0")
        archive.add_segmask(_member_like(layer), "extra")
        union = archive.get_binary_mask_by_names(["liver", "lesion_1"])  # not yet written
        assert s3.log.requests == [], s3.log.summary()
    np.testing.assert_array_equal(union, organs["masks"]["liver"] | _member_like(layer).data)
    assert s3.log.count(method="PUT") == 1, s3.log.summary()
    assert s3.log.count(method="GET") == 0, s3.log.summary()
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert archive.all_names() == ["layer_0", "extra"]
        assert archive.load_segmask("layer_0") == layer
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names("spleen"), organs["masks"]["spleen"]
        )


def test_s3_write_mode_without_overwrite_is_create_only(
    s3: BucketFixture, organs: dict[str, Any]
) -> None:
    url = s3.url("exclusive.mska")
    with MaskArchive(organs["path"]) as local:
        layer = local.load_segmask("layer_0")
    archive = MaskArchive(url, "w", storage_options=s3.storage_options, overwrite=False)
    archive.add_segmask(layer, "layer_0")
    s3.fs.pipe_file(s3.path("exclusive.mska"), b"theirs")  # created meanwhile
    with pytest.raises(MaskFileExistsError, match="already exists"):
        archive.close()
    assert s3.fs.cat_file(s3.path("exclusive.mska")) == b"theirs"
    with pytest.raises(MaskFileExistsError, match="exists"):
        MaskArchive(url, "w", storage_options=s3.storage_options, overwrite=False)


def _member_like(layer: SegmentationMask) -> SegmentationMask:
    data = np.zeros(layer.shape, bool)
    data[5:9, 20:40, 30:60] = True
    return SegmentationMask(data, {"lesion_1": 1}, layer.space)


def test_pack_folder_straight_to_s3(
    s3: BucketFixture, shared_data: Path, organs: dict[str, Any]
) -> None:
    url = s3.url("packed.mska")
    report = pack_folder(
        shared_data / "totalseg" / "organs",
        url,
        mapping=shared_data / "totalseg" / "labels_total.json",
        storage_options=s3.storage_options,
    )
    assert report.n_layers == 1
    assert s3.log.count(method="PUT") == 1, s3.log.summary()
    assert s3.fs.cat_file(s3.path("packed.mska")) == organs["bytes"]  # deterministic


def test_s3_append_mode_rewrites_with_one_put(s3: BucketFixture, organs: dict[str, Any]) -> None:
    url = _upload(s3, "organs.mska", organs["bytes"])
    with MaskArchive(organs["path"]) as local:
        layer = local.load_segmask("layer_0")
    lesion = _member_like(layer)
    with MaskArchive(url, "a", storage_options=s3.storage_options) as archive:
        archive.add_segmask(lesion, "lesions")
        assert s3.log.count(method="PUT") == 0  # written when closed
    puts = s3.log.count(method="PUT")
    print(f"\nS3 mode 'a' + 1 member: {s3.log.summary()}")
    assert puts == 1, s3.log.summary()
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert archive.all_names() == ["layer_0", "lesions"]
        assert archive.load_segmask("layer_0") == layer
        assert archive.load_segmask("lesions") == lesion
        union = archive.get_binary_mask_by_names(["lung_upper_lobe_left", "lesion_1"])
    np.testing.assert_array_equal(union, organs["masks"]["lung_upper_lobe_left"] | lesion.data)


def test_s3_missing_object(s3: BucketFixture) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.mska"):
        MaskArchive(s3.url("nothing.mska"), storage_options=s3.storage_options)


# --- other filesystems --------------------------------------------------------------------------


def test_memory_filesystem(memory_fs: Any, organs: dict[str, Any], many: dict[str, Any]) -> None:
    memory_fs.pipe_file("/arch/organs.mska", organs["bytes"])
    with MaskArchive("memory://arch/organs.mska") as archive:
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names("liver"), organs["masks"]["liver"]
        )
    url = "memory://arch/many.mska"
    with MaskArchive(url, "w") as archive:
        for i in range(3):
            archive.add_segmask(_member(i), f"m{i}")
    with MaskArchive(url, "a") as archive:
        archive.add_segmask(_member(3), "m3")
        archive.remove("m0")
    with MaskArchive(url) as archive:
        assert archive.all_names() == ["m1", "m2", "m3"]
        for i in (1, 2, 3):
            assert archive.load_segmask(f"m{i}") == _member(i)


def test_gcs_round_trip(gcs: BucketFixture, organs: dict[str, Any]) -> None:
    url = _upload(gcs, "organs.mska", organs["bytes"])
    with MaskArchive(url, storage_options=gcs.storage_options) as archive:
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names(["liver", "aorta"]),
            organs["masks"]["liver"] | organs["masks"]["aorta"],
        )
    downloads = [r for r in gcs.log.gets() if "/o/" in r.path or "alt=media" in r.query]
    print(f"\nGCS cold open + 2 structures: {gcs.log.summary()}")
    assert 1 <= len(downloads) <= 2, gcs.log.summary()

    written = gcs.url("written.mska")
    with MaskArchive(organs["path"]) as local:
        layer = local.load_segmask("layer_0")
    with MaskArchive(written, "w", storage_options=gcs.storage_options) as archive:
        archive.add_segmask(layer, "layer_0")
    with MaskArchive(written, "a", storage_options=gcs.storage_options) as archive:
        archive.add_segmask(_member_like(layer), "lesions")
    with MaskArchive(written, storage_options=gcs.storage_options) as archive:
        assert archive.all_names() == ["layer_0", "lesions"]
        assert archive.load_segmask("layer_0") == layer
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names("lesion_1"), _member_like(layer).data
        )


def test_pack_folder_from_a_gcs_folder_url(gcs: BucketFixture, shared_data: Path) -> None:
    organs = shared_data / "totalseg" / "organs"
    names = ["liver", "spleen", "aorta", "kidney_left"]
    for name in names:
        gcs.fs.put_file(str(organs / f"{name}.nii.gz"), gcs.path(f"case1/{name}.nii.gz"))
    gcs.fs.pipe(
        gcs.path("case1/labels.json"), b'{"liver": 5, "spleen": 1, "aorta": 52, "kidney_left": 3}'
    )
    out = gcs.url("case1.mska")
    report = pack_folder(
        gcs.url("case1/"),
        out,
        mapping=gcs.url("case1/labels.json"),
        storage_options=gcs.storage_options,
    )
    assert sorted(n for layer in report.layers.values() for n in layer) == sorted(names)
    with MaskArchive(out, storage_options=gcs.storage_options) as archive:
        assert archive.structures()["aorta"][1] == 52
        liver = archive.load_structure("liver")
    expected, _ = read_nifti(organs / "liver.nii.gz")
    np.testing.assert_array_equal(liver, expected != 0)
