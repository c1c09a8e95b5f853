"""``MaskArchive`` (.mska): API, cross-member queries, layering, and the 117-organ round trip."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from spacetransformer import Space

import medmask
from medmask import (
    LabelNotFoundError,
    MemberNotFoundError,
    ReadOnlyError,
    SegmentationMask,
    SpaceMismatchError,
)
from medmask.archive import MaskArchive, assign_layers
from medmask.interop.folders import pack_folder, unpack

SPACE = Space(
    shape=(12, 20, 24),
    origin=(-10.0, 5.0, 30.0),
    spacing=(2.5, 0.8, 0.7),
)
SHAPE = (12, 20, 24)


def _box(
    z: slice, y: slice, x: slice, shape: tuple[int, int, int] = SHAPE
) -> npt.NDArray[np.bool_]:
    out = np.zeros(shape, dtype=bool)
    out[z, y, x] = True
    return out


def _binary(seed: int = 0) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    return SegmentationMask(rng.random(SHAPE) < 0.1, {"spot": 1}, SPACE)


def _multilabel(seed: int = 1) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4, SHAPE, dtype=np.uint8)
    return SegmentationMask(data, {"a": 1, "b": 2, "c": 3}, SPACE)


def _deep(seed: int = 2) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = np.where(rng.random(SHAPE) < 0.3, 1000, 0).astype(np.uint16)
    data[:2] = 7
    return SegmentationMask(data, {"big": 1000, "seven": 7}, SPACE)


MEMBERS = {"binary": _binary, "labels8": _multilabel, "labels16": _deep}


@pytest.fixture
def small_archive(tmp_path: Path) -> tuple[Path, dict[str, SegmentationMask]]:
    """An archive with a bool (1 bit), a uint8 and a uint16 member."""
    masks = {name: make() for name, make in MEMBERS.items()}
    path = tmp_path / "small.mska"
    with MaskArchive(path, "w") as archive:
        for name, mask in masks.items():
            archive.add_segmask(mask, name)
    return path, masks


# --- basic API --------------------------------------------------------------------------------


def test_members_of_bit_depth_1_8_16_round_trip(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, masks = small_archive
    assert [m.bit_depth for m in masks.values()] == [1, 8, 16]
    with MaskArchive(path) as archive:
        assert archive.mode == "r"
        assert archive.all_names() == ["binary", "labels8", "labels16"]
        assert list(archive) == ["binary", "labels8", "labels16"]
        assert len(archive) == 3
        assert "labels8" in archive
        assert "nope" not in archive
        assert archive.space == SPACE
        for name, mask in masks.items():
            loaded = archive.load_segmask(name)
            assert loaded == mask, name
            assert loaded.bit_depth == mask.bit_depth
            assert loaded.dtype == mask.dtype
        everything = archive.read_all_masks()
        assert list(everything) == list(masks)
        for name, mask in masks.items():
            assert everything[name] == mask
        mappings = archive.read_all_mapping()
        assert {k: v.to_dict() for k, v in mappings.items()} == {
            "binary": {"spot": 1},
            "labels8": {"a": 1, "b": 2, "c": 3},
            "labels16": {"big": 1000, "seven": 7},
        }


def test_info_reports_sizes_and_counts_without_decoding(
    small_archive: tuple[Path, dict[str, SegmentationMask]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, masks = small_archive

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("info() must not decode voxels")

    monkeypatch.setattr("medmask.engine.decode_region", no_decoding)
    with MaskArchive(path) as archive:
        infos = archive.info()
    assert [i.name for i in infos] == list(masks)
    total_compressed = 0
    for info, (name, mask) in zip(infos, masks.items(), strict=True):
        assert info.shape == SHAPE
        assert info.dtype == mask.dtype
        assert info.bit_depth == mask.bit_depth
        assert info.raw_bytes == math.prod(SHAPE) * mask.dtype.itemsize
        assert 0 < info.compressed_bytes < info.raw_bytes, name
        expected = mask.label_counts()
        assert info.voxel_counts() == expected
        assert {e.name for e in info.labels} == set(mask.mapping.names())
        total_compressed += info.compressed_bytes
    assert total_compressed < path.stat().st_size
    volumes = infos[0].volumes_mm3()
    assert volumes["spot"] == pytest.approx(
        masks["binary"].label_counts()["spot"] * 2.5 * 0.8 * 0.7
    )


def test_load_segmask_roi(small_archive: tuple[Path, dict[str, SegmentationMask]]) -> None:
    path, masks = small_archive
    roi = (slice(2, 7), slice(3, 20), slice(0, 5))
    with MaskArchive(path) as archive:
        part = archive.load_segmask("labels16", roi=roi)
    assert part.shape == (5, 17, 5)
    np.testing.assert_array_equal(part.data, masks["labels16"].data[roi])
    expected = SPACE.apply_bbox(np.array([[2, 7], [3, 20], [0, 5]]))
    assert part.space == expected
    assert part.mapping == masks["labels16"].mapping


def test_read_only_mode_refuses_writes(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, _ = small_archive
    before = path.read_bytes()
    with MaskArchive(path, "r") as archive:
        with pytest.raises(ReadOnlyError, match="read-only"):
            archive.add_segmask(_binary(9), "new")
        with pytest.raises(ReadOnlyError, match="read-only"):
            archive.remove("binary")
        with pytest.raises(ReadOnlyError, match="read-only"):
            archive.compact()
        with pytest.raises(ReadOnlyError, match="read-only"):
            archive.add_structures({"s": _box(slice(0, 1), slice(0, 1), slice(0, 1))})
        assert len(archive) == 3
    assert path.read_bytes() == before


def test_duplicate_member_name_is_refused(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, _ = small_archive
    with (
        MaskArchive(path, "a") as archive,
        pytest.raises(ValueError, match="'binary' already exists"),
    ):
        archive.add_segmask(_binary(5), "binary")
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_binary(5), "x")
        with pytest.raises(ValueError, match="'x' already exists"):
            archive.add_segmask(_binary(6), "x")
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["x"]


def _moved(**changes: Any) -> Space:
    fields = {
        "shape": SPACE.shape,
        "origin": SPACE.origin,
        "spacing": SPACE.spacing,
        "x_orientation": SPACE.x_orientation,
        "y_orientation": SPACE.y_orientation,
        "z_orientation": SPACE.z_orientation,
    }
    fields.update(changes)
    return Space(**fields)


@pytest.mark.parametrize(
    ("space", "what"),
    [
        (_moved(shape=(12, 20, 25)), "shape"),
        (_moved(origin=(-9.0, 5.0, 30.0)), "origin"),
        (_moved(origin=(-10.0, 5.0, 31.0)), "origin"),
        (_moved(spacing=(2.5, 0.8, 0.75)), "spacing"),
        (_moved(spacing=(2.0, 0.8, 0.7)), "spacing"),
    ],
)
def test_space_mismatch_is_refused(tmp_path: Path, space: Space, what: str) -> None:
    data = np.zeros(tuple(int(s) for s in space.shape), dtype=bool)
    data[0, 0, 0] = True
    other = SegmentationMask(data, {"x": 1}, space)
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        with pytest.raises(SpaceMismatchError, match=what):
            archive.add_segmask(other, "other")
        archive.add_segmask(_binary(), "ok")
    with MaskArchive(path, "a") as archive, pytest.raises(SpaceMismatchError, match=what):
        archive.add_segmask(other, "other")
    with pytest.raises(SpaceMismatchError, match=what):
        MaskArchive(path, "a", space=space)
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["ok"]


def test_tiny_float_differences_in_space_are_accepted(tmp_path: Path) -> None:
    nearly = _moved(
        origin=tuple(v + 1e-6 for v in SPACE.origin),
        spacing=tuple(v + 1e-6 for v in SPACE.spacing),
    )
    assert nearly != SPACE
    mask = SegmentationMask(_binary().data, {"spot": 1}, nearly)
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(_binary(), "first")
        archive.add_segmask(mask, "second")
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["first", "second"]
        assert archive.space == SPACE  # the archive keeps its own space
        np.testing.assert_array_equal(archive.load_segmask("second").data, mask.data)


def test_unknown_member_is_a_key_error_with_hint(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, _ = small_archive
    with MaskArchive(path, "a") as archive:
        with pytest.raises(MemberNotFoundError, match="Did you mean 'labels8'") as info:
            archive.load_segmask("label8")
        assert isinstance(info.value, KeyError)
        assert str(path) in str(info.value)
        with pytest.raises(MemberNotFoundError, match="no member named 'binry'"):
            archive.remove("binry")
        with pytest.raises(KeyError):
            archive.load_segmask("completely-different")


def test_mode_w_replaces_the_file_only_on_successful_close(tmp_path: Path) -> None:
    path = tmp_path / "keep.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_binary(), "old")
    old_bytes = path.read_bytes()

    class Boom(Exception):
        pass

    def failing_session() -> None:
        with MaskArchive(path, "w") as archive:
            archive.add_segmask(_multilabel(), "new")
            raise Boom

    with pytest.raises(Boom):
        failing_session()
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["keep.mska"]  # no temporary file left behind

    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_multilabel(), "new")
        assert path.read_bytes() == old_bytes  # nothing written before close
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["new"]
        assert archive.load_segmask("new") == _multilabel()


def test_append_commits_each_member_at_once(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, masks = small_archive
    with MaskArchive(path, "a") as writer:
        writer.add_segmask(_binary(42), "late")
        with MaskArchive(path) as reader:  # a second reader sees it before close
            assert reader.all_names() == [*masks, "late"]
            assert reader.load_segmask("late") == _binary(42)
        writer.add_segmask(_binary(43), "later")
        assert writer.load_segmask("late") == _binary(42)
    with MaskArchive(path) as reader:
        assert reader.all_names() == [*masks, "late", "later"]
        for name, mask in masks.items():
            assert reader.load_segmask(name) == mask


def test_remove_then_compact_shrinks_the_file(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, masks = small_archive
    size_before = path.stat().st_size
    with MaskArchive(path, "a") as archive:
        archive.remove("labels8")
        assert archive.all_names() == ["binary", "labels16"]
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["binary", "labels16"]
        assert "labels8" not in archive
    assert path.stat().st_size >= size_before  # bytes stay until compaction
    with MaskArchive(path, "a") as archive:
        archive.compact()
        assert archive.all_names() == ["binary", "labels16"]
        archive.add_segmask(_binary(77), "after_compact")  # appending still works
    size_after = path.stat().st_size
    print(f"\nremove+compact: {size_before} B -> {size_after} B")
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["binary", "labels16", "after_compact"]
        assert archive.load_segmask("binary") == masks["binary"]
        assert archive.load_segmask("labels16") == masks["labels16"]
        assert archive.load_segmask("after_compact") == _binary(77)
        labels8_bytes = sum(i.compressed_bytes for i in archive.info() if i.name == "labels8")
    assert labels8_bytes == 0
    with MaskArchive(path, "a") as archive:
        archive.remove("after_compact")
        archive.compact()
    assert path.stat().st_size < size_before


def test_flush_then_more_members_keeps_the_flushed_ones(tmp_path: Path, memory_fs: Any) -> None:
    path = tmp_path / "f.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_binary(1), "one")
        archive.flush()
        archive.add_segmask(_binary(2), "two")
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["one", "two"]
        assert archive.load_segmask("one") == _binary(1)
    url = "memory://flush/x.mska"
    with MaskArchive(url, "w") as archive:
        archive.add_segmask(_binary(1), "one")
    with MaskArchive(url, "a") as archive:  # remote append: rewrites the object
        archive.add_segmask(_binary(2), "two")
        archive.flush()
        archive.add_segmask(_binary(3), "three")
    with MaskArchive(url) as archive:
        assert archive.all_names() == ["one", "two", "three"]
        for seed, name in enumerate(["one", "two", "three"], start=1):
            assert archive.load_segmask(name) == _binary(seed)


def test_closed_archive_refuses_reads(
    small_archive: tuple[Path, dict[str, SegmentationMask]],
) -> None:
    path, _ = small_archive
    archive = MaskArchive(path)
    archive.close()
    with pytest.raises(ValueError, match="closed"):
        archive.load_segmask("binary")


def test_invalid_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        MaskArchive(tmp_path / "x.mska", "x")  # type: ignore[arg-type]


def test_missing_file_in_read_mode(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MaskArchive(tmp_path / "absent.mska")


def test_top_level_exports() -> None:
    assert medmask.MaskArchive is MaskArchive
    assert medmask.pack_folder is pack_folder
    assert medmask.unpack is unpack


# --- cross-member queries ---------------------------------------------------------------------


@pytest.fixture
def two_member_archive(tmp_path: Path) -> tuple[Path, dict[str, npt.NDArray[np.bool_]]]:
    structures = {
        "lung_upper_lobe_left": _box(slice(0, 6), slice(0, 10), slice(0, 12)),
        "lung_lower_lobe_left": _box(slice(6, 12), slice(0, 10), slice(0, 12)),
        "liver": _box(slice(2, 9), slice(12, 20), slice(12, 24)),
    }
    lesions = np.zeros(SHAPE, np.uint8)
    lesions[4:8, 4:7, 5:9] = 1  # crosses both lobes
    lesions[3:5, 14:16, 20:22] = 2  # inside the liver
    path = tmp_path / "q.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_structures(structures)
        archive.add_segmask(
            SegmentationMask(lesions, {"lesion_1": 1, "lesion_2": 2}, SPACE), "lesions"
        )
    return path, {**structures, "lesion_1": lesions == 1, "lesion_2": lesions == 2}


def test_get_binary_mask_by_names_across_members(
    two_member_archive: tuple[Path, dict[str, npt.NDArray[np.bool_]]],
) -> None:
    path, truth = two_member_archive
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["layer_0", "lesions"]
        assert archive.locate("lesion_1") == ("lesions", 1)
        assert archive.locate("liver")[0] == "layer_0"
        union = archive.get_binary_mask_by_names(["lung_upper_lobe_left", "lesion_1"])
        assert union.dtype == np.bool_
        np.testing.assert_array_equal(union, truth["lung_upper_lobe_left"] | truth["lesion_1"])
        assert union.sum() > truth["lung_upper_lobe_left"].sum()
        for name, mask in truth.items():
            np.testing.assert_array_equal(archive.get_binary_mask_by_names([name]), mask)
            np.testing.assert_array_equal(archive.load_structure(name), mask)
        np.testing.assert_array_equal(archive.get_binary_mask_by_names("liver"), truth["liver"])
        assert set(archive.structures()) == set(truth)


def test_queries_see_members_not_yet_written(tmp_path: Path) -> None:
    structures = {
        "p": _box(slice(0, 3), slice(0, 3), slice(0, 3)),
        "q": _box(slice(2, 6), slice(2, 6), slice(2, 6)),
    }
    path = tmp_path / "pending.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_structures(structures)
        archive.add_segmask(_multilabel(), "labels8")
        assert not path.exists()
        assert len(archive) == 3
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names(["p", "q"]), structures["p"] | structures["q"]
        )
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names("c"), _multilabel().data == 3
        )
        assert archive.load_segmask("labels8") == _multilabel()
        assert [i.name for i in archive.info()] == ["layer_0", "layer_1", "labels8"]
        assert archive.read_all_masks()["labels8"] == _multilabel()
    with MaskArchive(path) as archive:
        np.testing.assert_array_equal(archive.get_binary_mask_by_names("q"), structures["q"])


def test_unknown_structure_is_a_key_error_with_hint(
    two_member_archive: tuple[Path, dict[str, npt.NDArray[np.bool_]]],
) -> None:
    path, _ = two_member_archive
    with MaskArchive(path) as archive:
        with pytest.raises(
            LabelNotFoundError, match=r"no structure named 'lesion_3'\. Did you mean .*'lesion_1'"
        ) as info:
            archive.get_binary_mask_by_names(["liver", "lesion_3"])
        assert isinstance(info.value, KeyError)
        with pytest.raises(KeyError, match="no structure named 'livr'"):
            archive.locate("livr")


def test_ambiguous_structure_names_both_members(tmp_path: Path) -> None:
    path = tmp_path / "amb.mska"
    tumor_a = SegmentationMask(_box(slice(0, 2), slice(0, 2), slice(0, 2)), {"tumor": 1}, SPACE)
    tumor_b = SegmentationMask(_box(slice(5, 7), slice(5, 7), slice(5, 7)), {"tumor": 1}, SPACE)
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(tumor_a, "reader_1")
        archive.add_segmask(tumor_b, "reader_2")
    with MaskArchive(path) as archive:
        for call in (archive.locate, archive.get_binary_mask_by_names):
            with pytest.raises(KeyError, match="several members") as info:
                call("tumor")
            assert "reader_1" in str(info.value)
            assert "reader_2" in str(info.value)
        assert "tumor" not in archive.structures()
        assert archive.load_segmask("reader_2") == tumor_b  # addressable by member


# --- layering ---------------------------------------------------------------------------------


def test_disjoint_structures_share_one_layer(tmp_path: Path) -> None:
    structures = {
        f"s{i}": _box(slice(i, i + 1), slice(0, 20), slice(0, 24)) for i in range(SHAPE[0])
    }
    structures["empty"] = np.zeros(SHAPE, bool)
    path = tmp_path / "d.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        report = archive.add_structures(structures)
    assert report.n_layers == 1
    assert sorted(report.layers["layer_0"]) == sorted(structures)
    with MaskArchive(path) as archive:
        assert archive.info()[0].bit_depth == 8
        for name, mask in structures.items():
            np.testing.assert_array_equal(archive.get_binary_mask_by_names(name), mask)


def test_add_structures_honours_label_values_and_prefix(tmp_path: Path) -> None:
    structures = {
        "a": _box(slice(0, 3), slice(0, 3), slice(0, 3)),
        "b": _box(slice(1, 4), slice(1, 4), slice(1, 4)),  # overlaps a
        "c": _box(slice(8, 9), slice(8, 9), slice(8, 9)),
    }
    path = tmp_path / "v.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        report = archive.add_structures(structures, mapping={"a": 300, "b": 2, "c": 5}, prefix="L")
    assert report.n_layers == 2
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["L0", "L1"]
        located = {n: archive.locate(n) for n in structures}
        assert {n: v for n, (_, v) in located.items()} == {"a": 300, "b": 2, "c": 5}
        assert archive.load_segmask(located["a"][0]).bit_depth == 16
        for name, mask in structures.items():
            np.testing.assert_array_equal(archive.get_binary_mask_by_names(name), mask)
        with pytest.raises(ValueError, match="already exists"):
            MaskArchive(path, "a").add_structures({"a": structures["a"]})


@pytest.mark.parametrize("seed", range(6))
def test_random_overlapping_structures_lose_no_voxel(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    structures = {}
    for i in range(int(rng.integers(3, 15))):
        lo = [int(rng.integers(0, s)) for s in SHAPE]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, SHAPE, strict=True)]
        mask = _box(*(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        if rng.random() < 0.3:
            mask &= rng.random(SHAPE) < 0.5
        structures[f"s{i}"] = mask
    layers = assign_layers(structures)
    assert sorted(n for layer in layers for n in layer) == sorted(structures)
    for layer in layers:
        total = sum(structures[n].astype(int) for n in layer)
        assert np.max(total) <= 1, f"layer {layer} has overlapping structures"
    path = tmp_path / "r.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        report = archive.add_structures(structures)
    assert report.n_layers == len(layers)
    with MaskArchive(path) as archive:
        assert len(archive) == report.n_layers
        for name, mask in structures.items():
            np.testing.assert_array_equal(
                archive.get_binary_mask_by_names([name]), mask, err_msg=name
            )


# --- the 117 TotalSegmentator organ files -----------------------------------------------------


@pytest.fixture(scope="module")
def organs(shared_data: Path) -> dict[str, Any]:
    from medmask.interop.nifti import read_nifti

    folder = shared_data / "totalseg" / "organs"
    files = sorted(folder.glob("*.nii.gz"))
    assert len(files) == 117
    masks, spaces = {}, {}
    for f in files:
        array, space = read_nifti(f)
        name = f.name.removesuffix(".nii.gz")
        masks[name] = array != 0
        spaces[name] = space
    return {
        "folder": folder,
        "files": files,
        "labels": shared_data / "totalseg" / "labels_total.json",
        "masks": masks,
        "space": spaces[files[0].name.removesuffix(".nii.gz")],
        "spaces": spaces,
    }


@pytest.fixture(scope="module")
def organs_archive(
    organs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("organs") / "organs.mska"
    report = pack_folder(organs["folder"], out, mapping=organs["labels"])
    return out, report


def test_pack_folder_117_organs_round_trip(
    organs: dict[str, Any], organs_archive: tuple[Path, Any]
) -> None:
    path, report = organs_archive
    masks: dict[str, npt.NDArray[np.bool_]] = organs["masks"]
    assert report.n_layers == 1
    assert sorted(report.layers["layer_0"]) == sorted(masks)
    archive_bytes = path.stat().st_size
    nifti_bytes = sum(f.stat().st_size for f in organs["files"])
    print(
        f"\n117 organs: archive {archive_bytes} B vs {nifti_bytes} B of .nii.gz "
        f"(1/{nifti_bytes / archive_bytes:.1f})"
    )
    assert archive_bytes * 5 < nifti_bytes
    labels = json.loads(Path(organs["labels"]).read_text())
    with MaskArchive(path) as archive:
        assert archive.space == organs["space"]
        for space in organs["spaces"].values():
            assert archive.space == space
        assert set(archive.structures()) == set(masks)
        layer = archive.load_segmask("layer_0")
        assert layer.space == organs["space"]
        assert layer.mapping.to_dict() == {n: labels[n] for n in masks}
        info = archive.info()[0]
        assert info.voxel_counts() == {n: int(m.sum()) for n, m in masks.items()}
        for name, mask in masks.items():
            assert archive.locate(name) == ("layer_0", labels[name])
            np.testing.assert_array_equal(layer.data == labels[name], mask, err_msg=name)
        for name in ["liver", "aorta", "lung_upper_lobe_left", "brain"]:  # brain is empty here
            np.testing.assert_array_equal(archive.get_binary_mask_by_names(name), masks[name])


def test_unpack_writes_117_identical_nifti_files(
    organs: dict[str, Any], organs_archive: tuple[Path, Any], tmp_path: Path
) -> None:
    import nibabel as nib

    path, _ = organs_archive
    written = unpack(path, tmp_path / "out")
    assert len(written) == 117
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f.name for f in organs["files"]
    )
    for original in organs["files"]:
        src = nib.load(original)
        back = nib.load(tmp_path / "out" / original.name)
        data = np.asarray(back.dataobj)
        assert data.dtype == np.uint8
        assert set(np.unique(data).tolist()) <= {0, 1}
        np.testing.assert_array_equal(
            data, (np.asarray(src.dataobj) != 0).astype(np.uint8), err_msg=original.name
        )
        np.testing.assert_allclose(back.affine, src.affine, atol=1e-5)


def test_unpack_accepts_an_open_archive(organs_archive: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = organs_archive
    with MaskArchive(path) as archive:
        written = unpack(archive, tmp_path / "o")
        assert len(written) == 117
        assert archive.load_segmask("layer_0").shape == (30, 101, 122)  # still open


def _lesion_across_lobes(masks: dict[str, npt.NDArray[np.bool_]]) -> npt.NDArray[np.bool_]:
    """A small box that touches lung_upper_lobe_left and lung_lower_lobe_left."""
    upper, lower = masks["lung_upper_lobe_left"], masks["lung_lower_lobe_left"]
    for z, y, x in zip(*np.nonzero(lower), strict=True):
        box = (
            slice(max(z - 1, 0), z + 2),
            slice(max(y - 2, 0), y + 3),
            slice(max(x - 2, 0), x + 3),
        )
        if upper[box].any():
            lesion = np.zeros_like(upper)
            lesion[box] = True
            return lesion
    raise AssertionError("the left lobes do not touch")


def test_layering_organs_then_lung_and_lesion(
    organs: dict[str, Any], organs_archive: tuple[Path, Any], tmp_path: Path
) -> None:
    masks: dict[str, npt.NDArray[np.bool_]] = organs["masks"]
    lobes = [n for n in masks if n.startswith("lung_") and "_lobe_" in n]
    assert len(lobes) == 5
    lung = np.logical_or.reduce([masks[n] for n in lobes])
    lesion = _lesion_across_lobes(masks)
    assert (lesion & masks["lung_upper_lobe_left"]).any()
    assert (lesion & masks["lung_lower_lobe_left"]).any()
    assert (lesion & lung).any()

    path = tmp_path / "organs.mska"
    shutil.copyfile(organs_archive[0], path)
    with MaskArchive(path, "a") as archive:
        report = archive.add_structures({"lung": lung, "lesion": lesion})
    assert report.n_layers == 2
    assert report.layers == {"layer_1": ["lung"], "layer_2": ["lesion"]}
    truth = {**masks, "lung": lung, "lesion": lesion}
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["layer_0", "layer_1", "layer_2"]
        assert set(archive.structures()) == set(truth)
        layers = {name: archive.load_segmask(name) for name in archive.all_names()}
        for name, mask in truth.items():
            member, value = archive.locate(name)
            np.testing.assert_array_equal(layers[member].data == value, mask, err_msg=name)
        np.testing.assert_array_equal(archive.get_binary_mask_by_names("lung"), lung)
        np.testing.assert_array_equal(archive.get_binary_mask_by_names("lesion"), lesion)
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names(["lesion", "liver"]), lesion | masks["liver"]
        )


def test_lobes_lung_and_lesion_in_one_call_need_three_layers(
    organs: dict[str, Any], tmp_path: Path
) -> None:
    masks: dict[str, npt.NDArray[np.bool_]] = organs["masks"]
    lobes = {n: m for n, m in masks.items() if n.startswith("lung_") and "_lobe_" in n}
    lung = np.logical_or.reduce(list(lobes.values()))
    lesion = _lesion_across_lobes(masks)
    structures = {**lobes, "lung": lung, "lesion": lesion}
    # a 3-clique (lesion, lung, a lobe overlap pairwise): 2 layers cannot hold them losslessly
    lobe = masks["lung_upper_lobe_left"]
    assert (lesion & lung).any()
    assert (lesion & lobe).any()
    assert (lung & lobe).any()
    path = tmp_path / "lungs.mska"
    with MaskArchive(path, "w", space=organs["space"]) as archive:
        report = archive.add_structures(structures)
    assert report.n_layers == 3
    with MaskArchive(path) as archive:
        assert len(archive) == 3
        for name, mask in structures.items():
            np.testing.assert_array_equal(
                archive.get_binary_mask_by_names([name]), mask, err_msg=name
            )


def test_write_mode_without_overwrite_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.mska"
    mask = SegmentationMask(np.eye(4, dtype=np.uint8)[None], {"one": 1})
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(mask, "first")
    before = path.read_bytes()
    with pytest.raises(medmask.MaskFileExistsError, match="exists"):
        MaskArchive(path, "w", overwrite=False)
    fresh = tmp_path / "b.mska"
    archive = MaskArchive(fresh, "w", overwrite=False)
    archive.add_segmask(mask, "mine")
    fresh.write_bytes(before)  # someone else creates it before we write: theirs stays
    with pytest.raises(medmask.MaskFileExistsError, match="already exists"):
        archive.close()
    assert fresh.read_bytes() == before
    with MaskArchive(tmp_path / "c.mska", "w", overwrite=False) as archive:
        archive.add_segmask(mask, "mine")
        archive.flush()
        archive.add_segmask(mask, "again")  # later flushes replace our own file
    assert MaskArchive(tmp_path / "c.mska").all_names() == ["mine", "again"]
